// AVX2 + FMA + F16C copy of the linear_logprobs row kernels (see linear_logprobs_kernels.h), selected at run time
// only on CPUs that have them; the same scheme as token_logprobs_kernels_avx2.cpp. The pragma comes before any
// include so at::vec picks its AVX2 implementation (Sleef's 8-wide exp), and setup.py links this object after every
// baseline one, so the linker keeps baseline copies of inline functions that several objects emit.
#include "linear_logprobs_kernels.h"

#if TAO_CPU_AVX2_LINEAR_LOGPROBS
#pragma GCC target("avx2,fma,f16c")
// GCC applies the pragma to code generation but does not define the ISA macros that headers test (sleef.h declares
// its 8-wide functions only under __AVX2__); define them as -mavx2 -mfma -mf16c would.
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
// GCC warns that helpers it generates itself take AVX values without AVX enabled; none is emitted out of line here
// (the object's only non-local symbols are the two entry points of linear_logprobs_kernels.h).
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY_AVX2
#include "linear_logprobs_kernels_impl.h"
#endif
