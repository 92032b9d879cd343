// Launchers of the token_logprobs CUDA kernels (csrc/cuda/token_logprobs.cu), called by the host code in
// csrc/cuda/token_logprobs_host.cpp after it has checked the arguments and allocated the outputs.
#pragma once

#include <cuda_runtime_api.h>

#include "../token_logprobs_rows.h"

namespace tao_engine::cuda {

// out[i] = log_softmax(logits[i] * inv_temperature)[targets[i]] in fp32, clamped to <= 0; one block per row.
void launch_token_logprobs(const TokenLogprobsRows& rows, float* out, cudaStream_t stream);

// grad_logits[i] = grad_out[i] * (onehot(targets[i]) - softmax(logits[i] * inv_temperature)) * inv_temperature in
// the logits' dtype; grad_logits is a contiguous [N, V] buffer. One block per row.
void launch_token_logprobs_backward(
    const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, cudaStream_t stream);

}  // namespace tao_engine::cuda
