// Conversions between the storage dtypes of tao_engine's CUDA kernels (fp32, bf16, fp16) and fp32 arithmetic, and the
// launchers' dispatch on that dtype, shared by the device translation units of csrc/cuda/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <utility>

#include "../float_kind.h"

namespace tao_engine::cuda {

// value as To, one of the storage types or fp32, From being the other side; to a half type it rounds to nearest even,
// as torch's conversions round.
template <typename To, typename From>
__device__ __forceinline__ To convert_float(From value) {
  if constexpr (std::is_same_v<From, __half>) {
    return __half2float(value);
  } else if constexpr (std::is_same_v<From, __nv_bfloat16>) {
    return __bfloat162float(value);
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(value);
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16_rn(value);
  } else {
    return value;
  }
}

template <typename T>
__device__ __forceinline__ float load_float(T value) {
  return convert_float<float>(value);
}

template <typename T>
__device__ __forceinline__ T store_float(float value) {
  return convert_float<T>(value);
}

// Calls f(T{}) with T the CUDA type of `kind`.
template <typename F>
inline void with_float_kind(FloatKind kind, F&& f) {
  visit_float_kind<float, __nv_bfloat16, __half>(kind, std::forward<F>(f));
}

}  // namespace tao_engine::cuda
