// Included by the `*_kernels_avx512.cpp` files only, after their `*_kernels.h` and before their `*_kernels_impl.h`:
// everything compiled after it targets AVX-512 (F, BW, VL, DQ: ATen's own AVX512 capability) with FMA and F16C, so
// at::vec picks its 16-lane implementation. As for the AVX2 copies (avx2_target.h), such code must never run on
// older CPUs, so setup.py links these objects after every baseline one. (No include guard on purpose: the pragma
// must apply to the including file.)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
// The ISA macros the pragma does not define, as -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c would.
#include "avx2_macros.h"
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
// As in avx2_target.h: no helper GCC generates with AVX-512 values is emitted out of line (checked with nm).
#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 reports the deliberately undefined register of its own _mm512_undefined_* intrinsics (through at::vec's
// conversions) as (maybe) uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define CPU_CAPABILITY_AVX512
