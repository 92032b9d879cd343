// The floating-point storage types of tao_engine's kernels (fp32, bf16, fp16), as the kernels see them: a plain enum,
// so the per-ISA CPU objects and the CUDA device translation units include nothing from torch. Host code maps
// at::ScalarType onto it with float_kind_of.h after checking the dtype.
#pragma once

namespace tao_engine {

enum class FloatKind { kFloat32, kBFloat16, kFloat16 };

// Calls f(T{}) with T the C++ type of `kind` among the caller's own names for the three (at::vec's c10 types on
// the CPU, cuda_bf16.h's and cuda_fp16.h's on the GPU), so each dispatch site states only what it runs per type.
template <typename F32, typename BF16, typename F16, typename F>
inline void visit_float_kind(FloatKind kind, F&& f) {
  switch (kind) {
    case FloatKind::kFloat32:
      return f(F32{});
    case FloatKind::kBFloat16:
      return f(BF16{});
    case FloatKind::kFloat16:
      return f(F16{});
  }
}

}  // namespace tao_engine
