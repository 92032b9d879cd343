// The apply_rotary kernels, compiled once per CPU capability: include only from a rotary_kernels_<capability>.cpp
// that defines CPU_CAPABILITY first (see rotary_kernels.h).
//
// Per token, the cos/sin row is read once (it stays in L1) for all of its q and k heads; each head is converted into
// an fp32 buffer, rotated with whole vectors over each half (a scalar tail when D / 2 is not a multiple of the
// vector width), and stored rounded.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including rotary_kernels_impl.h"
#endif

#include "float_rows.h"
#include "rotary_kernels.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

// out[0, half) and out[half, D) from x, for one head; cos/sin point at the token's row.
inline void rotate(const float* x, const float* cos, const float* sin, int64_t half, bool transpose, float* out) {
  const float *c1 = cos, *c2 = cos + half, *s1 = sin, *s2 = sin + half;
  const float *x1 = x, *x2 = x + half;
  int64_t i = 0;
  if (!transpose) {
    for (; i + kW <= half; i += kW) {
      const fVec a = fVec::loadu(x1 + i), b = fVec::loadu(x2 + i);
      at::vec::fnmadd(b, fVec::loadu(s1 + i), a * fVec::loadu(c1 + i)).store(out + i);
      at::vec::fmadd(a, fVec::loadu(s2 + i), b * fVec::loadu(c2 + i)).store(out + half + i);
    }
    for (; i < half; ++i) {
      out[i] = x1[i] * c1[i] - x2[i] * s1[i];
      out[half + i] = x2[i] * c2[i] + x1[i] * s2[i];
    }
  } else {
    for (; i + kW <= half; i += kW) {
      const fVec a = fVec::loadu(x1 + i), b = fVec::loadu(x2 + i);
      at::vec::fmadd(b, fVec::loadu(s2 + i), a * fVec::loadu(c1 + i)).store(out + i);
      at::vec::fnmadd(a, fVec::loadu(s1 + i), b * fVec::loadu(c2 + i)).store(out + half + i);
    }
    for (; i < half; ++i) {
      out[i] = x1[i] * c1[i] + x2[i] * s2[i];
      out[half + i] = x2[i] * c2[i] - x1[i] * s1[i];
    }
  }
}

template <typename T>
void rotate_heads(const RotaryHeads& heads, int64_t t, const float* cos, const float* sin, int64_t d, bool transpose,
                  float* in_buf, float* out_buf) {
  const T* x = static_cast<const T*>(heads.x) + t * heads.stride_t;
  T* out = static_cast<T*>(heads.out) + t * heads.heads * d;
  for (int64_t h = 0; h < heads.heads; ++h) {
    load_row(x + h * heads.stride_h, d, in_buf);
    rotate(in_buf, cos, sin, d / 2, transpose, out_buf);
    store_row(out_buf, d, out + h * d);
  }
}

template <typename T>
void tokens(const RotaryProblem& p, int64_t begin, int64_t end) {
  const int64_t d = p.head_dim;
  FloatBuffer in_buf(d), out_buf(d);
  for (int64_t t = begin; t < end; ++t) {
    const float* cos = p.cos + t * p.cs_stride;
    const float* sin = p.sin + t * p.cs_stride;
    rotate_heads<T>(p.q, t, cos, sin, d, p.transpose, in_buf.data, out_buf.data);
    rotate_heads<T>(p.k, t, cos, sin, d, p.transpose, in_buf.data, out_buf.data);
  }
}

}  // namespace

void rotary_tokens(const RotaryProblem& p, int64_t begin, int64_t end) {
  with_float_kind(p.kind, [&](auto tag) { tokens<decltype(tag)>(p, begin, end); });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
