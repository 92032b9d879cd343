// CUDA policy_loss: device code and launchers (checks and glue in policy_loss_host.cpp). The per-token arithmetic and
// the sequence scales are the CPU kernel's (csrc/policy_loss.h), so both backends agree with autograd on the
// reference (including its split of the gradient where r A equals the clipped term exactly); sums are fp64.

#include <cub/block/block_reduce.cuh>
#include <cuda_runtime.h>

#include <cstdint>

#include "policy_loss_launch.h"

namespace tao_engine::cuda {
namespace {

constexpr int kThreads = 128;
using DoubleReduce = cub::BlockReduce<double, kThreads>;
using FloatReduce = cub::BlockReduce<float, kThreads>;

__device__ __forceinline__ float mask_at(const PolicyLossArgs& args, int64_t b, int64_t t) {
  const int64_t offset = b * args.mask_row_stride + t * args.mask_col_stride;
  return args.mask_is_bool ? (static_cast<const bool*>(args.mask)[offset] ? 1.0f : 0.0f)
                           : static_cast<const float*>(args.mask)[offset];
}

// Sequence blockIdx.x: per-token loss and unscaled gradient, and the sequence's sums.
__global__ void __launch_bounds__(kThreads) sequence_kernel(PolicyLossArgs args) {
  __shared__ typename DoubleReduce::TempStorage d_scratch;
  __shared__ typename FloatReduce::TempStorage f_scratch;
  __shared__ float shared_seq_ratio;
  const int64_t b = blockIdx.x;
  const PolicyLossOptions& o = args.options;
  if (o.ratio_level == RatioLevel::kSequence) {
    double weighted_delta = 0.0;
    double tokens = 0.0;
    for (int64_t t = threadIdx.x; t < args.time; t += blockDim.x) {
      const float m = mask_at(args, b, t);
      if (m != 0.0f) {
        weighted_delta += static_cast<double>(m * (args.logprobs.at(b, t) - args.old_logprobs.at(b, t)));
        tokens += m;
      }
    }
    const double total_delta = DoubleReduce(d_scratch).Sum(weighted_delta);
    __syncthreads();
    const double total_tokens = DoubleReduce(d_scratch).Sum(tokens);
    if (threadIdx.x == 0) {
      shared_seq_ratio = static_cast<float>(exp(total_tokens > 0.0 ? total_delta / total_tokens : 0.0));
    }
    __syncthreads();
  }
  const float seq_ratio = o.ratio_level == RatioLevel::kSequence ? shared_seq_ratio : 1.0f;
  SequenceSums sums;
  float ratio_max = -INFINITY;
  for (int64_t t = threadIdx.x; t < args.time; t += blockDim.x) {
    const int64_t out = b * args.time + t;
    const float m = mask_at(args, b, t);
    if (m == 0.0f) {  // padding is never read: it may hold anything, even NaN
      args.per_token[out] = 0.0f;
      if (args.grad != nullptr) args.grad[out] = 0.0f;
      continue;
    }
    const float lp = args.logprobs.at(b, t);
    const float ratio = o.ratio_level == RatioLevel::kToken ? expf(lp - args.old_logprobs.at(b, t)) : seq_ratio;
    const float weight = args.token_weights.data != nullptr ? args.token_weights.at(b, t) : 1.0f;
    const float x_ref = o.has_ref ? args.ref_logprobs.at(b, t) - lp : 0.0f;
    const TokenTerms terms = token_terms(ratio, args.advantages.at(b, t), weight, x_ref, o);
    const float loss = m * terms.loss;
    args.per_token[out] = loss;
    if (args.grad != nullptr) args.grad[out] = m * terms.grad;
    sums.loss += loss;
    sums.tokens += m;
    sums.clipped += terms.clipped ? m : 0.0f;
    sums.ratio += static_cast<double>(m * ratio);
    sums.kl += static_cast<double>(m * terms.kl);
    ratio_max = fmaxf(ratio_max, ratio);
  }
  SequenceSums total;
  total.loss = DoubleReduce(d_scratch).Sum(sums.loss);
  __syncthreads();
  total.tokens = DoubleReduce(d_scratch).Sum(sums.tokens);
  __syncthreads();
  total.clipped = DoubleReduce(d_scratch).Sum(sums.clipped);
  __syncthreads();
  total.ratio = DoubleReduce(d_scratch).Sum(sums.ratio);
  __syncthreads();
  total.kl = DoubleReduce(d_scratch).Sum(sums.kl);
  total.ratio_max = FloatReduce(f_scratch).Reduce(ratio_max, [](float x, float y) { return fmaxf(x, y); });
  if (threadIdx.x == 0) {
    args.sums[b] = total;
  }
}

// One block: the per-sequence scales, the loss and the metrics, summed in a fixed order.
__global__ void __launch_bounds__(kThreads) batch_kernel(PolicyLossArgs args) {
  __shared__ typename DoubleReduce::TempStorage d_scratch;
  __shared__ typename FloatReduce::TempStorage f_scratch;
  __shared__ double shared_tokens;
  __shared__ double shared_sequences;
  double tokens = 0.0;
  double sequences = 0.0;
  for (int64_t b = threadIdx.x; b < args.batch; b += blockDim.x) {
    tokens += args.sums[b].tokens;
    sequences += args.sums[b].tokens > 0.0 ? 1.0 : 0.0;
  }
  const double total_tokens = DoubleReduce(d_scratch).Sum(tokens);
  __syncthreads();
  const double total_sequences = DoubleReduce(d_scratch).Sum(sequences);
  if (threadIdx.x == 0) {
    shared_tokens = total_tokens;
    shared_sequences = total_sequences;
  }
  __syncthreads();
  const PolicyLossOptions& o = args.options;
  double loss = 0.0, clipped = 0.0, ratio = 0.0, kl = 0.0;
  float ratio_max = -INFINITY;
  for (int64_t b = threadIdx.x; b < args.batch; b += blockDim.x) {
    const SequenceSums s = args.sums[b];
    double scale = 0.0;  // an empty sequence contributes 0
    if (s.tokens > 0.0) {
      scale = sequence_scale(o, s.tokens, shared_tokens, shared_sequences);
      ratio_max = fmaxf(ratio_max, s.ratio_max);
    }
    args.scales[b] = static_cast<float>(scale);
    loss += scale * s.loss;
    clipped += s.clipped;
    ratio += s.ratio;
    kl += s.kl;
  }
  __syncthreads();
  const double total_loss = DoubleReduce(d_scratch).Sum(loss);
  __syncthreads();
  const double total_clipped = DoubleReduce(d_scratch).Sum(clipped);
  __syncthreads();
  const double total_ratio = DoubleReduce(d_scratch).Sum(ratio);
  __syncthreads();
  const double total_kl = DoubleReduce(d_scratch).Sum(kl);
  const float max_all = FloatReduce(f_scratch).Reduce(ratio_max, [](float x, float y) { return fmaxf(x, y); });
  if (threadIdx.x == 0) {
    const bool any = shared_tokens > 0.0;
    *args.loss = static_cast<float>(total_loss);
    args.stats[0] = any ? static_cast<float>(total_clipped / shared_tokens) : 0.0f;
    args.stats[1] = any ? static_cast<float>(total_ratio / shared_tokens) : 0.0f;
    args.stats[2] = any ? max_all : 0.0f;
    args.stats[3] = any ? static_cast<float>(total_kl / shared_tokens) : 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads) scale_grad_kernel(PolicyLossArgs args) {
  const int64_t b = blockIdx.x;
  const float scale = args.scales[b];
  for (int64_t t = threadIdx.x; t < args.time; t += blockDim.x) {
    args.grad[b * args.time + t] *= scale;
  }
}

}  // namespace

void launch_policy_loss(const PolicyLossArgs& args, cudaStream_t stream) {
  if (args.batch > 0) {
    sequence_kernel<<<static_cast<unsigned int>(args.batch), kThreads, 0, stream>>>(args);
  }
  batch_kernel<<<1, kThreads, 0, stream>>>(args);  // also writes loss 0 and zero metrics for an empty batch
  if (args.grad != nullptr && args.batch > 0 && args.time > 0) {
    scale_grad_kernel<<<static_cast<unsigned int>(args.batch), kThreads, 0, stream>>>(args);
  }
}

}  // namespace tao_engine::cuda
