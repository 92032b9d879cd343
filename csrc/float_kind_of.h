// Host side of float_kind.h: which at::ScalarType values the kernels store, and their FloatKind.
#pragma once

#include <c10/core/ScalarType.h>

#include "float_kind.h"

namespace tao_engine {

inline bool is_float_kind(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kBFloat16 || t == c10::kHalf;
}

// t must pass is_float_kind.
inline FloatKind float_kind_of(c10::ScalarType t) {
  if (t == c10::kBFloat16) {
    return FloatKind::kBFloat16;
  }
  return t == c10::kHalf ? FloatKind::kFloat16 : FloatKind::kFloat32;
}

}  // namespace tao_engine
