// Kernels of apply_rotary (rotate-half RoPE of q and k, one pass, no concatenated temporaries), compiled once per CPU
// capability as ATen does: the same source (rotary_kernels_impl.h) is built for the baseline ISA (namespace DEFAULT)
// and, on x86-64 with GCC, for AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/rotary.cpp picks one at run time.
//
// With x = [x1, x2] (halves of D), cos = [c1, c2], sin = [s1, s2] (fp32 rows [N, D]):
//   forward:   out = [x1 c1 - x2 s1, x2 c2 + x1 s2]          (x cos + rotate_half(x) sin, the reference)
//   transpose: out = [x1 c1 + x2 s2, x2 c2 - x1 s1]          (its adjoint: the backward maps grad_out to grad_x)
// in fp32, rounded once into the output's dtype.
#pragma once

#include <cstdint>

#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()
#include "../float_kind.h"

namespace tao_engine::cpu {

// One [N, H, D] input and its contiguous output.
struct RotaryHeads {
  const void* x;  // head (t, h) at x + t * stride_t + h * stride_h, its D values contiguous
  int64_t stride_t;
  int64_t stride_h;
  void* out;  // [N, H, D] contiguous
  int64_t heads;  // H
};

struct RotaryProblem {
  RotaryHeads q;
  RotaryHeads k;
  FloatKind kind;  // of q, k and both outputs
  const float* cos;  // [N, D]: row t at cos + t * cs_stride, D values contiguous
  const float* sin;
  int64_t cs_stride;
  int64_t head_dim;  // D, even
  bool transpose;
};

// Tokens [begin, end) of q and k.
using RotaryKernel = void(const RotaryProblem& p, int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    RotaryKernel rotary_tokens;
)

}  // namespace tao_engine::cpu
