// Conversions between the storage dtypes of tao_engine's CUDA kernels (fp32, bf16, fp16) and fp32 arithmetic, shared
// by the device translation units of csrc/cuda/ (each includes it into its own anonymous namespace use).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace tao_engine::cuda {

template <typename T>
__device__ __forceinline__ float load_float(T value);
template <>
__device__ __forceinline__ float load_float<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ float load_float<__half>(__half value) {
  return __half2float(value);
}
template <>
__device__ __forceinline__ float load_float<__nv_bfloat16>(__nv_bfloat16 value) {
  return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T store_float(float value);
template <>
__device__ __forceinline__ float store_float<float>(float value) {
  return value;
}
template <>
__device__ __forceinline__ __half store_float<__half>(float value) {
  return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 store_float<__nv_bfloat16>(float value) {
  return __float2bfloat16_rn(value);
}

}  // namespace tao_engine::cuda
