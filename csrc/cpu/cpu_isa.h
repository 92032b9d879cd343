// Which instruction sets the CPU kernels are compiled for and may run with. Every kernel family is built twice from
// one source, as ATen's own kernels are: for the baseline ISA (namespace DEFAULT) and, on x86-64 with GCC, for
// AVX2 + FMA + F16C (namespace AVX2, see avx2_target.h); the host code picks one at run time.
#pragma once

// The AVX2 copies are compiled with GCC's `#pragma GCC target`; other compilers and architectures build DEFAULT only.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TAO_CPU_AVX2_KERNELS 1
#else
#define TAO_CPU_AVX2_KERNELS 0
#endif

// Declares a kernel family's entry points (a list of declarations) in every namespace it is compiled into, so each
// signature is written once.
#if TAO_CPU_AVX2_KERNELS
#define TAO_CPU_KERNELS(...)   \
  namespace DEFAULT {          \
  __VA_ARGS__                  \
  }                            \
  namespace AVX2 {             \
  __VA_ARGS__                  \
  }
#else
#define TAO_CPU_KERNELS(...) \
  namespace DEFAULT {        \
  __VA_ARGS__                \
  }
#endif

// The copy of kernel `name` (declared with TAO_CPU_KERNELS inside tao_engine::cpu) that this CPU runs.
#if TAO_CPU_AVX2_KERNELS
#define TAO_CPU_KERNEL(name) \
  (::tao_engine::cpu::use_avx2_kernels() ? &::tao_engine::cpu::AVX2::name : &::tao_engine::cpu::DEFAULT::name)
#else
#define TAO_CPU_KERNEL(name) (&::tao_engine::cpu::DEFAULT::name)
#endif

namespace tao_engine::cpu {

// True where the AVX2 copies may run: ATen itself runs AVX2 or AVX512 code and the CPU has FMA and F16C. Following
// ATen's choice means ATEN_CPU_CAPABILITY=default selects the baseline copies too (the tests use that to cover both
// copies on one machine). Decided once per process. Defined in cpu_isa.cpp, a baseline translation unit.
bool use_avx2_kernels();

}  // namespace tao_engine::cpu
