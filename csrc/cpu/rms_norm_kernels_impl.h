// The rms_norm row kernels, compiled once per CPU capability: include only from a rms_norm_kernels_<capability>.cpp
// that defines CPU_CAPABILITY first (see rms_norm_kernels.h).
//
// A row (H values; 576 for SmolLM2, 4096 for an 8B model) is converted into an fp32 buffer padded with zeros to a
// whole number of vectors, worked on there in L1 by full-vector loops (the zero lanes add nothing to the sums), and
// stored back once, rounded to its dtype.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including rms_norm_kernels_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "float_rows.h"
#include "rms_norm_kernels.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

inline int64_t padded(int64_t n) {
  return (n + kW - 1) / kW * kW;
}

// Zeroes buf[n, padded(n)).
inline void zero_tail(float* buf, int64_t n) {
  std::fill(buf + n, buf + padded(n), 0.0f);
}

inline float horizontal_sum(const fVec& v) {
  return at::vec::vec_reduce_all<float>([](fVec& a, fVec& b) { return a + b; }, v);
}

// sum of buf[i]^2 over a padded row, with four independent accumulators (the FMA latency, not its throughput, would
// bound a single chain).
inline float sum_squares(const float* buf, int64_t hp) {
  fVec a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
  int64_t i = 0;
  for (; i + 4 * kW <= hp; i += 4 * kW) {
    const fVec v0 = fVec::loadu(buf + i), v1 = fVec::loadu(buf + i + kW);
    const fVec v2 = fVec::loadu(buf + i + 2 * kW), v3 = fVec::loadu(buf + i + 3 * kW);
    a0 = at::vec::fmadd(v0, v0, a0);
    a1 = at::vec::fmadd(v1, v1, a1);
    a2 = at::vec::fmadd(v2, v2, a2);
    a3 = at::vec::fmadd(v3, v3, a3);
  }
  for (; i < hp; i += kW) {
    const fVec v = fVec::loadu(buf + i);
    a0 = at::vec::fmadd(v, v, a0);
  }
  return horizontal_sum((a0 + a1) + (a2 + a3));
}

// 1 / sqrt(mean(v^2) + eps) of a padded row of h values, as the reference computes it in fp32.
inline float inverse_rms(const float* v, int64_t h, float eps) {
  return 1.0f / std::sqrt(sum_squares(v, padded(h)) / static_cast<float>(h) + eps);
}

// Two passes per row: (1) v = x (+ residual, rounded to x's dtype and stored as the sum) into an fp32 buffer, with
// its sum of squares; (2) out = w * round_x(v s), converted and stored. Whole steps of 2 kW values, then a scalar
// tail with the same roundings.
template <typename x_t, typename w_t>
void forward_rows(const RmsNormForward& p, int64_t begin, int64_t end) {
  using out_t = std::conditional_t<std::is_same_v<w_t, float>, float, x_t>;
  constexpr int64_t kStep = 2 * kW;
  const int64_t h = p.hidden;
  const int64_t body = h / kStep * kStep;
  FloatBuffer v(h), w(h);
  load_row(static_cast<const w_t*>(p.weight), h, w.data);
  const x_t* x = static_cast<const x_t*>(p.x);
  const x_t* residual = static_cast<const x_t*>(p.residual);
  for (int64_t row = begin; row < end; ++row) {
    const x_t* xr = x + row * p.x_stride;
    const x_t* rr = residual == nullptr ? nullptr : residual + row * p.residual_stride;
    x_t* sr = rr == nullptr ? nullptr : static_cast<x_t*>(p.summed) + row * h;
    fVec acc0(0.0f), acc1(0.0f);
    for (int64_t i = 0; i < body; i += kStep) {
      fVec a, b;
      load2(xr + i, a, b);
      if (rr != nullptr) {
        fVec c, d;
        load2(rr + i, c, d);
        a = a + c;
        b = b + d;
        round2<x_t>(a, b);  // the residual stream holds the sum in x's dtype
        store2(sr + i, a, b);
      }
      a.store(v.data + i);
      b.store(v.data + i + kW);
      acc0 = at::vec::fmadd(a, a, acc0);
      acc1 = at::vec::fmadd(b, b, acc1);
    }
    float squares = horizontal_sum(acc0 + acc1);
    for (int64_t i = body; i < h; ++i) {
      float value = static_cast<float>(xr[i]);
      if (rr != nullptr) {
        sr[i] = static_cast<x_t>(value + static_cast<float>(rr[i]));
        value = static_cast<float>(sr[i]);
      }
      v.data[i] = value;
      squares += value * value;
    }
    const float s_value = 1.0f / std::sqrt(squares / static_cast<float>(h) + p.eps);
    const fVec s(s_value);
    out_t* out = static_cast<out_t*>(p.out) + row * h;
    for (int64_t i = 0; i < body; i += kStep) {
      fVec a = fVec::loadu(v.data + i) * s;
      fVec b = fVec::loadu(v.data + i + kW) * s;
      round2<x_t>(a, b);  // the reference casts the normalised row to x's dtype before the weight multiply
      store2(out + i, a * fVec::loadu(w.data + i), b * fVec::loadu(w.data + i + kW));
    }
    for (int64_t i = body; i < h; ++i) {
      const float n = static_cast<float>(static_cast<x_t>(v.data[i] * s_value));
      out[i] = static_cast<out_t>(w.data[i] * n);
    }
  }
}

template <typename x_t, typename w_t>
void backward_blocks(const RmsNormBackward& p, int64_t block_begin, int64_t block_end) {
  using g_t = std::conditional_t<std::is_same_v<w_t, float>, float, x_t>;
  const int64_t h = p.hidden;
  const int64_t hp = padded(h);
  // v: the input row, later grad_x; g: the incoming gradient, later w g; n = v s; nr: n rounded as the forward
  // multiplied it by the weight, later grad_add. Loads write [0, h) only, so the zeroed tails stay zero.
  FloatBuffer v(hp), g(hp), w(hp), n(hp), nr(hp), acc(hp);
  load_row(static_cast<const w_t*>(p.weight), h, w.data);
  for (float* buf : {w.data, v.data, g.data}) {
    zero_tail(buf, h);
  }
  const x_t* x = static_cast<const x_t*>(p.x);
  const g_t* grad = static_cast<const g_t*>(p.grad_out);
  const x_t* grad_add = static_cast<const x_t*>(p.grad_add);
  x_t* grad_x = static_cast<x_t*>(p.grad_x);
  const float inv_h = 1.0f / static_cast<float>(h);
  for (int64_t block = block_begin; block < block_end; ++block) {
    std::fill(acc.data, acc.data + hp, 0.0f);
    const int64_t row_end = std::min(p.rows, (block + 1) * p.rows_per_block);
    for (int64_t row = block * p.rows_per_block; row < row_end; ++row) {
      load_row(x + row * h, h, v.data);
      load_row(grad + row * h, h, g.data);
      const fVec s(inverse_rms(v.data, h, p.eps));
      for (int64_t i = 0; i < hp; i += kW) {
        (fVec::loadu(v.data + i) * s).store(n.data + i);
      }
      std::copy(n.data, n.data + hp, nr.data);
      round_row<x_t>(nr.data, h);
      fVec dot(0.0f);
      for (int64_t i = 0; i < hp; i += kW) {
        const fVec gi = fVec::loadu(g.data + i);
        at::vec::fmadd(gi, fVec::loadu(nr.data + i), fVec::loadu(acc.data + i)).store(acc.data + i);
        const fVec gw = gi * fVec::loadu(w.data + i);
        gw.store(g.data + i);
        dot = at::vec::fmadd(gw, fVec::loadu(n.data + i), dot);
      }
      // d(w n)/dv: grad_v = s (w g - n mean(w g n)).
      const fVec mean_dot(horizontal_sum(dot) * inv_h);
      for (int64_t i = 0; i < hp; i += kW) {
        (s * at::vec::fnmadd(fVec::loadu(n.data + i), mean_dot, fVec::loadu(g.data + i))).store(v.data + i);
      }
      if (grad_add != nullptr) {
        load_row(grad_add + row * h, h, nr.data);
        for (int64_t i = 0; i < hp; i += kW) {
          (fVec::loadu(v.data + i) + fVec::loadu(nr.data + i)).store(v.data + i);
        }
      }
      store_row(v.data, h, grad_x + row * h);
    }
    std::copy(acc.data, acc.data + h, p.grad_weight_partial + block * h);
  }
}

// Calls f(x_t{}, w_t{}) with x_t the C++ type of `x_kind` and w_t fp32 or x_t, the weight's type.
template <typename F>
void with_norm_types(FloatKind x_kind, bool weight_fp32, F&& f) {
  with_float_kind(x_kind, [&](auto x_tag) {
    if (weight_fp32) {
      f(x_tag, float{});
    } else {
      f(x_tag, x_tag);
    }
  });
}

}  // namespace

void rms_norm_rows(const RmsNormForward& p, int64_t begin, int64_t end) {
  with_norm_types(p.x_kind, p.weight_fp32, [&](auto x_tag, auto w_tag) {
    forward_rows<decltype(x_tag), decltype(w_tag)>(p, begin, end);
  });
}

void rms_norm_backward_blocks(const RmsNormBackward& p, int64_t block_begin, int64_t block_end) {
  with_norm_types(p.x_kind, p.weight_fp32, [&](auto x_tag, auto w_tag) {
    backward_blocks<decltype(x_tag), decltype(w_tag)>(p, block_begin, block_end);
  });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
