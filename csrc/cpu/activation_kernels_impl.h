// The silu_and_mul kernels, compiled once per CPU capability: include only from an activation_kernels_<capability>.cpp
// that defines CPU_CAPABILITY first (see activation_kernels.h).
//
// Elements go through fp32 tiles of kTile values on the stack (L1): load, compute with whole vectors, store rounded.
// sigmoid(g) uses e = exp(-|g|) <= 1 only (vec_exp.h's range): 1 / (1 + e) for g >= 0, e / (1 + e) below, so no
// exp overflows whatever g is. Below g = -87 vexp gives exactly 0 (e^g is subnormal there), so silu(g) is 0 instead
// of g e^g, whose magnitude is below 6e-37 in that range.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including activation_kernels_impl.h"
#endif

#include <algorithm>

#include "activation_kernels.h"
#include "float_rows.h"
#include "vec_exp.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kTile = 512;  // a multiple of every vector width; three fp32 tiles are 6 KiB

inline fVec sigmoid(const fVec& g) {
  const fVec e = vexp(fVec(0.0f) - g.abs());
  const fVec one(1.0f);
  const fVec r = one / (one + e);  // one division: sigmoid is r for g >= 0 and e r below
  return fVec::blendv(r, e * r, g < fVec(0.0f));
}

template <typename T>
void forward_range(const SiluAndMul& p, int64_t begin, int64_t end) {
  alignas(64) float g[kTile];
  alignas(64) float u[kTile];
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  T* out = static_cast<T*>(p.out);
  for (int64_t start = begin; start < end; start += kTile) {
    const int64_t n = std::min(kTile, end - start);
    const int64_t nv = (n + kW - 1) / kW * kW;
    load_row(gate + start, n, g);
    load_row(up + start, n, u);
    std::fill(g + n, g + nv, 0.0f);  // finite padding for the whole-vector loop; never stored
    std::fill(u + n, u + nv, 0.0f);
    for (int64_t i = 0; i < nv; i += kW) {
      const fVec gv = fVec::loadu(g + i);
      (gv * sigmoid(gv) * fVec::loadu(u + i)).store(g + i);
    }
    store_row(g, n, out + start);
  }
}

template <typename T>
void backward_range(const SiluAndMul& p, int64_t begin, int64_t end) {
  alignas(64) float g[kTile];
  alignas(64) float u[kTile];
  alignas(64) float d[kTile];
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  const T* grad = static_cast<const T*>(p.grad_out);
  T* grad_gate = static_cast<T*>(p.out);
  T* grad_up = static_cast<T*>(p.grad_up);
  const fVec one(1.0f);
  for (int64_t start = begin; start < end; start += kTile) {
    const int64_t n = std::min(kTile, end - start);
    const int64_t nv = (n + kW - 1) / kW * kW;
    load_row(gate + start, n, g);
    load_row(up + start, n, u);
    load_row(grad + start, n, d);
    for (float* buf : {g, u, d}) {
      std::fill(buf + n, buf + nv, 0.0f);
    }
    for (int64_t i = 0; i < nv; i += kW) {
      const fVec gv = fVec::loadu(g + i);
      const fVec uv = fVec::loadu(u + i);
      const fVec dv = fVec::loadu(d + i);
      const fVec sig = sigmoid(gv);
      // d silu(g) / dg = sig (1 + g (1 - sig))
      const fVec dsilu = sig * at::vec::fmadd(gv, one - sig, one);
      (dv * gv * sig).store(u + i);  // grad_up, written over up's tile (up is read above)
      (dv * uv * dsilu).store(g + i);  // grad_gate
    }
    store_row(g, n, grad_gate + start);
    store_row(u, n, grad_up + start);
  }
}

}  // namespace

void silu_and_mul_range(const SiluAndMul& p, int64_t begin, int64_t end) {
  with_float_kind(p.kind, [&](auto tag) { forward_range<decltype(tag)>(p, begin, end); });
}

void silu_and_mul_backward_range(const SiluAndMul& p, int64_t begin, int64_t end) {
  with_float_kind(p.kind, [&](auto tag) { backward_range<decltype(tag)>(p, begin, end); });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
