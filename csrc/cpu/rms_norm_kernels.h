// Row kernels of rms_norm and add_rms_norm (forward) and of their shared backward, compiled once per CPU capability
// as ATen does: the same source (rms_norm_kernels_impl.h) is built for the baseline ISA (namespace DEFAULT) and, on
// x86-64 with GCC, for AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/rms_norm.cpp picks one at run time. The entry
// points take raw pointers only, so the per-ISA translation units include as little as possible.
//
// Math (tao_engine/ops/rms_norm.py is the specification): per row of H values, in fp32,
//   v = x (+ residual, rounded to x's dtype: the sum a model keeps as its residual stream)
//   s = 1 / sqrt(mean(v^2) + eps),  n = v * s rounded to x's dtype,  out = weight * n  in out's dtype.
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()
#include "../float_kind.h"

namespace tao_engine::cpu {

struct RmsNormForward {
  const void* x;  // [N, H]: row r at x + r * x_stride elements, its H values contiguous, in x_kind
  int64_t x_stride;
  const void* residual;  // nullptr (rms_norm), or [N, H] in x_kind at residual + r * residual_stride (add_rms_norm)
  int64_t residual_stride;
  FloatKind x_kind;
  const void* weight;  // [H] contiguous, in x_kind or fp32
  bool weight_fp32;
  void* out;  // [N, H] contiguous: fp32 when weight_fp32, else x_kind (torch's type promotion of weight * n)
  void* summed;  // add_rms_norm: [N, H] contiguous in x_kind, gets v; nullptr for rms_norm
  int64_t hidden;  // H
  float eps;
};

// Rows [begin, end).
using RmsNormForwardKernel = void(const RmsNormForward& p, int64_t begin, int64_t end);

struct RmsNormBackward {
  const void* grad_out;  // [N, H] contiguous, in the forward output's dtype (fp32 when weight_fp32, else x_kind)
  const void* x;  // [N, H] contiguous in x_kind: the normalised input (v, the summed output for add_rms_norm)
  FloatKind x_kind;
  const void* weight;  // [H] contiguous, in x_kind or fp32
  bool weight_fp32;
  const void* grad_add;  // nullptr, or [N, H] contiguous in x_kind: added to grad_x (add_rms_norm's summed output)
  void* grad_x;  // [N, H] contiguous in x_kind
  float* grad_weight_partial;  // [num_blocks, H] fp32: block b's sum over its rows of grad_out * n
  int64_t rows;  // N
  int64_t rows_per_block;  // block b covers rows [b * rows_per_block, min(N, (b + 1) * rows_per_block))
  int64_t hidden;
  float eps;
};

// Row blocks [begin, end): grad_x = s (w g - n mean(w g n)) (+ grad_add) per row, and each block's partial sum of g n.
using RmsNormBackwardKernel = void(const RmsNormBackward& p, int64_t block_begin, int64_t block_end);

TAO_CPU_KERNELS(
    RmsNormForwardKernel rms_norm_rows;
    RmsNormBackwardKernel rms_norm_backward_blocks;
)

}  // namespace tao_engine::cpu
