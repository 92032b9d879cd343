// Row conversions between the kernels' storage types (fp32, bf16, fp16) and fp32 work buffers, with at::vec; the
// elementwise kernels (rms_norm, silu_and_mul, apply_rotary) load a row or tile into fp32, compute there, and store
// it back rounded once (round to nearest even, as c10's conversions). Compiled once per CPU capability: include only
// from a `*_kernels_impl.h` (CPU_CAPABILITY defined; see cpu_isa.h). Everything sits in an anonymous namespace, so
// each per-ISA object keeps its own copy (see avx2_target.h on why no inline symbol may be shared).
#pragma once

#include <tuple>
#include <type_traits>

#include "vec_common.h"  // fVec, kW, for_each_fvec, FloatBuffer

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

// dst[0, n) = src[0, n) as fp32.
template <typename T>
inline void load_row(const T* src, int64_t n, float* dst) {
  int64_t i = for_each_fvec(src, n, [dst](int64_t j, const fVec& v) { v.store(dst + j); });
  for (; i < n; ++i) {
    dst[i] = static_cast<float>(src[i]);
  }
}

// dst[0, n) = src[0, n) rounded to T.
template <typename T>
inline void store_row(const float* src, int64_t n, T* dst) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; i + kW <= n; i += kW) {
      fVec::loadu(src + i).store(dst + i);
    }
  } else {
    using rVec = at::vec::Vectorized<T>;
    for (; i + rVec::size() <= n; i += rVec::size()) {
      at::vec::convert_from_float<T>(fVec::loadu(src + i), fVec::loadu(src + i + kW)).store(dst + i);
    }
  }
  for (; i < n; ++i) {
    dst[i] = static_cast<T>(src[i]);
  }
}

// buf[0, n) = float(T(buf[0, n))): the value a tensor of dtype T would hold; nothing to do for fp32.
template <typename T>
inline void round_row(float* buf, int64_t n) {
  if constexpr (!std::is_same_v<T, float>) {
    using rVec = at::vec::Vectorized<T>;
    int64_t i = 0;
    for (; i + rVec::size() <= n; i += rVec::size()) {
      auto [a, b] = at::vec::convert_to_float<T>(
          at::vec::convert_from_float<T>(fVec::loadu(buf + i), fVec::loadu(buf + i + kW)));
      a.store(buf + i);
      b.store(buf + i + kW);
    }
    for (; i < n; ++i) {
      buf[i] = static_cast<float>(static_cast<T>(buf[i]));
    }
  }
}

// Two fp32 vectors (2 kW values) at a time, the unit in which every storage type converts: one Vectorized<T> of a
// half type holds 2 kW lanes.
static_assert(at::vec::Vectorized<c10::BFloat16>::size() == 2 * kW && at::vec::Vectorized<c10::Half>::size() == 2 * kW);

template <typename T>
inline void load2(const T* src, fVec& a, fVec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a = fVec::loadu(src);
    b = fVec::loadu(src + kW);
  } else {
    std::tie(a, b) = at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(src));
  }
}

template <typename T>
inline void store2(T* dst, const fVec& a, const fVec& b) {
  if constexpr (std::is_same_v<T, float>) {
    a.store(dst);
    b.store(dst + kW);
  } else {
    at::vec::convert_from_float<T>(a, b).store(dst);
  }
}

// (a, b) = the values a tensor of dtype T would hold; nothing to do for fp32.
template <typename T>
inline void round2(fVec& a, fVec& b) {
  if constexpr (!std::is_same_v<T, float>) {
    std::tie(a, b) = at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(a, b));
  }
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
