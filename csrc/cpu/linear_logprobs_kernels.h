// Row kernels of linear_logprobs (csrc/cpu/linear_logprobs.cpp), compiled once per CPU capability as ATen does: the
// same source (linear_logprobs_kernels_impl.h) is built for the baseline ISA (namespace DEFAULT) and, on x86-64 with
// GCC, for AVX2 + FMA + F16C (namespace AVX2). The host code computes one block of logits with a GEMM and hands it
// here: the forward folds it into running per-row statistics, the backward turns it in place into d loss / d logits.
// The entry points take raw pointers only, so the per-ISA translation units include as little as possible.
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()

namespace tao_engine::cpu {

// One block of raw logits, hidden[row0 : row0 + rows] @ weight[col0 : col0 + cols].T, as a contiguous fp32
// [rows, cols] buffer. Row r of the block is row row0 + r of the batch.
struct LogitsBlock {
  float* logits;  // [rows, cols]; the backward overwrites it with d loss / d logits
  int64_t row0;
  int64_t col0;
  int64_t cols;
  const int64_t* targets;  // [N] of the whole batch, each in [0, V)
  float inv_temperature;  // 1 / T: the kernels work on z = logits / T
};

// Per-row running statistics over the vocabulary blocks seen so far, each [N] fp32, indexed by batch row.
struct RunningStats {
  float* max;  // running max of z (-inf before the first block)
  float* sum_exp;  // sum of exp(z - max)
  float* sum_exp_shifted;  // sum of exp(z - max) * (z - max), <= 0; the entropy is log(sum_exp) - this / sum_exp
  float* target_z;  // z at the row's target, written by the block that holds it
};

// What the backward needs per row, each [N] fp32, indexed by batch row.
struct RowGradients {
  const float* lse;  // log sum exp(z)
  const float* entropy;  // -sum p log p
  const float* grad_logprobs;  // upstream gradient of the log-prob
  const float* grad_entropy;  // upstream gradient of the entropy
};

// The frozen-weight forward (csrc/cpu/linear_logprobs_frozen_weight.cpp) also keeps, per row, the softmax-weighted
// sums of the weight rows W_v, relative to the running max m as S and U are: [N, H] fp32 each, rows indexed by batch
// row. The kernel rescales a row's sums when m grows and writes the block's weights e^(z - m) (and e^(z - m) (z - m))
// for the GEMMs that add the block's share; normalized at the end they give E_p[W] and Cov_p(z, W).
struct WeightMoments {
  float* probs;  // [rows, cols] out: e^(z - m), m the running max after the block; may be block.logits itself
  float* shifted_probs;  // [rows, cols] out: e^(z - m) (z - m); nullptr when the entropy's gradient is not needed
  float* weight_sum;  // [N, H]: sum e^(z - m) W_v
  float* shifted_weight_sum;  // [N, H]: sum e^(z - m) (z - m) W_v, or nullptr with shifted_probs
  int64_t width;  // H
};

// Folds block rows [begin, end) into `stats`.
using ForwardBlockKernel = void(const LogitsBlock& block, const RunningStats& stats, int64_t begin, int64_t end);
// As ForwardBlockKernel, and rescales `moments`' rows [begin, end) to the new max and writes the block's weights.
using ForwardWeightsBlockKernel = void(
    const LogitsBlock& block, const RunningStats& stats, const WeightMoments& moments, int64_t begin, int64_t end);
// Overwrites block rows [begin, end) with d loss / d logits = (g_lp * (onehot - p) - g_ent * p * (log p + H)) / T.
using BackwardBlockKernel = void(const LogitsBlock& block, const RowGradients& grads, int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    ForwardBlockKernel linear_logprobs_forward_block;
    ForwardWeightsBlockKernel linear_logprobs_forward_weights_block;
    BackwardBlockKernel linear_logprobs_backward_block;
)

}  // namespace tao_engine::cpu
