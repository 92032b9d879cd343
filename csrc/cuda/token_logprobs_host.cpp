// CUDA host code of token_logprobs and its backward: argument checks (shared with CPU, csrc/token_logprobs.h),
// output allocation, device guard and stream, then the launchers of token_logprobs.cu. Compiled only in CUDA builds.
//
// Target range: checking it on the host would need a device-to-host copy (a sync) per call, so the kernels assert
// it on the device instead, as torch's gather does; an out-of-range target aborts the CUDA context with the op's
// name in the message.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../token_logprobs.h"
#include "token_logprobs_launch.h"

namespace tao_engine {
namespace {

void check_cuda_rows(const char* op, const at::Tensor& logits) {
  TORCH_CHECK(logits.is_cuda(), op, ": logits must be a CUDA tensor, got ", logits.device());
  // One block per row: the grid's x dimension bounds N.
  TORCH_CHECK(
      logits.size(0) <= std::numeric_limits<int32_t>::max(), op, ": at most 2^31 - 1 rows per call, got ",
      logits.size(0));
}

at::Tensor token_logprobs_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::token_logprobs";
  const at::Tensor logits = check_token_logprobs_args(op, logits_in, targets_in, temperature);
  check_cuda_rows(op, logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor targets = targets_in.contiguous();
  at::Tensor out = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  cuda::launch_token_logprobs(
      describe_token_logprobs_rows(logits, targets, temperature), out.mutable_data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor token_logprobs_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& logits_in, const at::Tensor& targets_in, double temperature) {
  constexpr const char* op = "tao_engine::token_logprobs_backward";
  const at::Tensor logits = check_token_logprobs_args(op, logits_in, targets_in, temperature);
  check_token_logprobs_grad(op, grad_out_in, logits);
  check_cuda_rows(op, logits);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor targets = targets_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();  // autograd often hands an expanded (stride 0) gradient
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());  // contiguous [N, V]
  cuda::launch_token_logprobs_backward(
      describe_token_logprobs_rows(logits, targets, temperature), grad_out.const_data_ptr<float>(),
      grad_logits.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_logits;
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CUDA, m) {
  m.impl("token_logprobs", &token_logprobs_cuda);
  m.impl("token_logprobs_backward", &token_logprobs_backward_cuda);
}

}  // namespace tao_engine
