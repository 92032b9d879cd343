// CUDA host code of group_advantages: argument checks (as csrc/cpu/advantages.cpp), output and scratch allocation,
// device guard and stream, then the launcher of advantages.cu. Compiled only in CUDA builds. No autograd.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>

#include "advantages_launch.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = "tao_engine::group_advantages";

cuda::AdvantageMode parse_mode(c10::string_view mode) {
  if (mode == "mean") return cuda::AdvantageMode::kMean;
  if (mode == "mean_std") return cuda::AdvantageMode::kMeanStd;
  if (mode == "leave_one_out") return cuda::AdvantageMode::kLeaveOneOut;
  if (mode == "mean_batch_std") return cuda::AdvantageMode::kMeanBatchStd;
  if (mode == "none") return cuda::AdvantageMode::kNone;
  TORCH_CHECK_VALUE(false, kOp, ": mode must be one of mean, mean_std, leave_one_out, mean_batch_std, none; got '",
                    std::string(mode), "'");
  return cuda::AdvantageMode::kNone;  // not reached: the check above throws
}

std::tuple<at::Tensor, at::Tensor> group_advantages_cuda(const at::Tensor& rewards, c10::string_view mode_name,
                                                         double eps) {
  TORCH_CHECK_VALUE(rewards.dim() == 2, kOp,
                    ": rewards must be a 2-D [P, n] tensor (P prompts x n candidates), got shape ", rewards.sizes());
  TORCH_CHECK_VALUE(rewards.scalar_type() == at::kFloat || rewards.scalar_type() == at::kDouble, kOp,
                    ": rewards must be float32 or float64 (NaN marks a missing reward), got ", rewards.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, kOp, ": eps must be a finite number >= 0, got ", eps);
  TORCH_CHECK(rewards.is_cuda(), kOp, ": rewards must be a CUDA tensor, got ", rewards.device());
  TORCH_CHECK(rewards.size(0) < std::numeric_limits<int32_t>::max(), kOp,
              ": at most 2^31 - 2 groups per call (one block per group), got ", rewards.size(0));
  const cuda::AdvantageMode mode = parse_mode(mode_name);
  const c10::cuda::CUDAGuard guard(rewards.device());
  at::Tensor advantages = at::empty(rewards.sizes(), rewards.options().dtype(at::kFloat));  // [P, n] contiguous
  at::Tensor zero_variance = at::empty({rewards.size(0)}, rewards.options().dtype(at::kBool));  // [P]
  // [P] GroupStats as raw bytes, and mean_batch_std's batch scale.
  at::Tensor stats = at::empty({static_cast<int64_t>(rewards.size(0) * sizeof(cuda::GroupStats))},
                               rewards.options().dtype(at::kByte));
  at::Tensor batch_scale = at::empty({1}, rewards.options().dtype(at::kFloat));
  cuda::AdvantagesArgs args{};
  args.rewards = rewards.const_data_ptr();
  args.rewards_fp64 = rewards.scalar_type() == at::kDouble;
  args.groups = rewards.size(0);
  args.n = rewards.size(1);
  args.stride0 = rewards.stride(0);
  args.stride1 = rewards.stride(1);
  args.mode = mode;
  args.eps = eps;
  args.advantages = advantages.mutable_data_ptr<float>();
  args.zero_variance = zero_variance.mutable_data_ptr<bool>();
  args.stats = reinterpret_cast<cuda::GroupStats*>(stats.mutable_data_ptr());
  args.batch_scale = batch_scale.mutable_data_ptr<float>();
  cuda::launch_group_advantages(args, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {advantages, zero_variance};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("group_advantages", &group_advantages_cuda);
}

}  // namespace tao_engine
