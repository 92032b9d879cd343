// CUDA host code of policy_loss: the options parsed as the CPU op parses them (csrc/policy_loss_args.h), the
// inputs checked and described by their strides, outputs and scratch allocated, then the launchers of policy_loss.cu.
// Compiled only in CUDA builds. The forward also returns d loss / d logprobs; autograd multiplies it by the incoming
// gradient (tao_engine/ops/_C_registrations.py).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../policy_loss_args.h"
#include "policy_loss_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kPolicyLossOp;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> policy_loss_cuda(
    const at::Tensor& logprobs, const at::Tensor& old_logprobs, const at::Tensor& advantages, const at::Tensor& mask,
    const std::optional<at::Tensor>& ref_logprobs, const std::optional<at::Tensor>& token_weights, double clip_low,
    double clip_high, std::optional<double> dual_clip, c10::string_view ratio_level, c10::string_view kl_type,
    double kl_coef, c10::string_view loss_agg, std::optional<int64_t> max_tokens, bool compute_grad) {
  check_policy_loss_logprobs(logprobs);
  TORCH_CHECK(logprobs.is_cuda(), kOp, ": logprobs must be a CUDA tensor, got ", logprobs.device());
  const int64_t batch = logprobs.size(0);
  const int64_t time = logprobs.size(1);
  TORCH_CHECK(batch <= std::numeric_limits<int32_t>::max(), kOp, ": at most 2^31 - 1 sequences, got ", batch);
  const PolicyLossOptions options = parse_options(clip_low, clip_high, dual_clip, ratio_level, kl_type, kl_coef,
                                                  loss_agg, max_tokens, ref_logprobs.has_value());
  // Every input must live on logprobs' device.
  const auto on_logprobs_device = [&logprobs](const char* name, const at::Tensor& t) {
    TORCH_CHECK_VALUE(t.device() == logprobs.device(), kOp, ": ", name, " must be on logprobs' device ",
                      logprobs.device(), ", got ", t.device());
  };
  check_mask(mask, batch, time, on_logprobs_device);
  const c10::cuda::CUDAGuard guard(logprobs.device());

  const auto f32 = logprobs.options().dtype(at::kFloat);
  at::Tensor per_token = at::empty({batch, time}, f32);
  at::Tensor grad = compute_grad ? at::empty({batch, time}, f32) : at::empty({0}, f32);
  at::Tensor loss = at::empty({}, f32);
  at::Tensor stats = at::empty({4}, f32);
  at::Tensor sums = at::empty({static_cast<int64_t>(batch * sizeof(SequenceSums))}, f32.dtype(at::kByte));
  at::Tensor scales = at::empty({batch}, f32);

  cuda::PolicyLossArgs args{};
  const auto rows = [&](const char* name, const at::Tensor& t, bool per_sequence_ok) {
    return rows_of(name, t, batch, time, per_sequence_ok, on_logprobs_device);
  };
  args.logprobs = rows("logprobs", logprobs, false);
  args.old_logprobs = rows("old_logprobs", old_logprobs, false);
  args.advantages = rows("advantages", advantages, true);
  args.ref_logprobs = ref_logprobs.has_value() ? rows("ref_logprobs", *ref_logprobs, false) : StridedRows{};
  args.token_weights = token_weights.has_value() ? rows("token_weights", *token_weights, false) : StridedRows{};
  args.mask = mask.const_data_ptr();
  args.mask_is_bool = mask.scalar_type() == at::kBool;
  args.mask_row_stride = mask.stride(0);
  args.mask_col_stride = mask.stride(1);
  args.batch = batch;
  args.time = time;
  args.options = options;
  args.per_token = per_token.mutable_data_ptr<float>();
  args.grad = compute_grad ? grad.mutable_data_ptr<float>() : nullptr;
  args.loss = loss.mutable_data_ptr<float>();
  args.stats = stats.mutable_data_ptr<float>();
  args.sums = reinterpret_cast<SequenceSums*>(sums.mutable_data_ptr());
  args.scales = scales.mutable_data_ptr<float>();
  cuda::launch_policy_loss(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {loss, per_token, stats, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("policy_loss", &policy_loss_cuda);
}

}  // namespace tao_engine
