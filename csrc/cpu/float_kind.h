// The floating-point element types of the elementwise CPU kernels (rms_norm, silu_and_mul, apply_rotary), as the
// per-ISA kernel objects see them: a plain enum, so those objects include no ATen tensor headers. The host code maps
// at::ScalarType onto it (float_kind_of) after checking the dtype.
#pragma once

#include <c10/core/ScalarType.h>

namespace tao_engine::cpu {

enum class FloatKind { kFloat32, kBFloat16, kFloat16 };

inline bool is_float_kind(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kBFloat16 || t == c10::kHalf;
}

inline FloatKind float_kind_of(c10::ScalarType t) {
  if (t == c10::kBFloat16) {
    return FloatKind::kBFloat16;
  }
  return t == c10::kHalf ? FloatKind::kFloat16 : FloatKind::kFloat32;
}

}  // namespace tao_engine::cpu
