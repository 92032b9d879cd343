// AVX2 + FMA + F16C copy of the paged_decode_attention kernels (see paged_attention_kernels.h), selected at run time
// only on CPUs that have them. Built like csrc/cpu/token_logprobs_kernels_avx2.cpp (whose notes explain the pragma,
// the ISA macros and why setup.py links this object after every baseline one).
#include "paged_attention_kernels.h"

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
#include "paged_attention_kernels_impl.h"
#endif
