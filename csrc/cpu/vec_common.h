// The at::vec vocabulary every CPU kernel family shares: the fp32 vector type, -inf, NaN-propagating max, lane
// reductions in lane order, the conversion of a row of any storage type (fp32, bf16, fp16) into fp32 vectors, the
// dispatch on that storage type, and a local heap buffer. Compiled once per CPU capability: include only from a
// `*_kernels_impl.h` or its helpers (CPU_CAPABILITY defined; see cpu_isa.h). Everything sits in an anonymous
// namespace, so each per-ISA object keeps its own copy (see avx2_target.h on why no inline symbol may be shared).
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including vec_common.h"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "../float_kind.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

using fVec = at::vec::Vectorized<float>;
using iVec = at::vec::Vectorized<int32_t>;
constexpr int64_t kW = fVec::size();
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// max that propagates NaN, so a NaN value makes its row's result NaN as torch's max and argmax do.
inline float nan_max(float a, float b) {
  return (a > b || std::isnan(a)) ? a : b;
}

// The max of v's lanes (NaN if any lane is NaN).
inline float lanes_max(const fVec& v) {
  alignas(64) float lanes[kW];
  v.store(lanes);
  float result = kNegInf;
  for (float lane : lanes) {
    result = nan_max(result, lane);
  }
  return result;
}

// The sum of v's lanes, added in lane order (the order the kernels' results were validated with).
inline float lanes_sum(const fVec& v) {
  alignas(64) float lanes[kW];
  v.store(lanes);
  float total = 0.0f;
  for (float lane : lanes) {
    total += lane;
  }
  return total;
}

// Calls f(i, v) with v = src[i, i + kW) as fp32, in order of i, over the longest prefix of src[0, n) that whole
// vectors of T cover, and returns where that prefix ends: the caller's scalar loop converts the rest. A vector of a
// half type holds 2 kW values and converts into two fp32 vectors.
template <typename T, typename F>
inline int64_t for_each_fvec(const T* src, int64_t n, F&& f) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; i + kW <= n; i += kW) {
      f(i, fVec::loadu(src + i));
    }
  } else {
    using rVec = at::vec::Vectorized<T>;
    for (; i + rVec::size() <= n; i += rVec::size()) {
      auto [a, b] = at::vec::convert_to_float<T>(rVec::loadu(src + i));
      f(i, a);
      f(i + kW, b);
    }
  }
  return i;
}

// Calls f(T{}) with T the c10 type of `kind`.
template <typename F>
inline void with_float_kind(FloatKind kind, F&& f) {
  visit_float_kind<float, c10::BFloat16, c10::Half>(kind, std::forward<F>(f));
}

// A heap buffer of n floats. Not std::vector: its members are weak symbols, and this object's copies of them would be
// compiled for this file's ISA (see avx2_target.h); a local type keeps every copy local.
struct FloatBuffer {
  explicit FloatBuffer(int64_t n) : data(new float[n > 0 ? n : 1]) {}
  ~FloatBuffer() { delete[] data; }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  float* data;
};

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
