// AVX2 + FMA + F16C copy of the sample row kernel (see sampling_kernels.h), selected at run time only on CPUs that
// have them; built as csrc/cpu/token_logprobs_kernels_avx2.cpp is (the pragma before any include, the ISA macros
// defined by hand, linked after every baseline object by setup.py). Its only non-local symbol is the entry point of
// sampling_kernels.h: the comparators given to std::sort and std::nth_element live in an anonymous namespace, so
// their AVX2 instantiations cannot stand in for baseline ones at link time (checked with nm).
#include "sampling_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#pragma GCC target("avx2,fma,f16c")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY_AVX2
#include "sampling_kernels_impl.h"
#endif
