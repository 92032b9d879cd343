// Row kernels of token_logprobs, compiled once per CPU capability as ATen does: the same source
// (token_logprobs_kernels_impl.h) is built for the baseline ISA (namespace DEFAULT) and, on x86-64 with GCC, for
// AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/token_logprobs.cpp picks one at run time. The entry points take raw
// pointers only, so the per-ISA translation units include as little as possible.
#pragma once

#include <cstdint>

#include "../token_logprobs_rows.h"

#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()

namespace tao_engine::cpu {

// For rows [begin, end): out[i] = log_softmax(logits[i] * inv_temperature)[targets[i]] in fp32, clamped to <= 0.
using ForwardRowsKernel = void(const TokenLogprobsRows& rows, float* out, int64_t begin, int64_t end);
// For rows [begin, end): grad_logits[i] = grad_out[i] * (onehot(targets[i]) - softmax(logits[i] * inv_t)) * inv_t,
// written in the logits' dtype to grad_logits, a contiguous [N, vocab] buffer.
using BackwardRowsKernel =
    void(const TokenLogprobsRows& rows, const float* grad_out, void* grad_logits, int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    ForwardRowsKernel token_logprobs_rows;
    BackwardRowsKernel token_logprobs_backward_rows;
)

}  // namespace tao_engine::cpu
