// AVX2 + FMA + F16C copy of the token_logprobs row kernels (see token_logprobs_kernels.h), selected at run time
// only on CPUs that have them. The pragma comes before any include so at::vec picks its AVX2 implementation, as
// ATen's own per-capability files do. Such code must never run on older CPUs, so setup.py links this object after
// every baseline one: the linker keeps the first copy of an inline function that several objects emit, and that
// copy must be baseline code.
#include "token_logprobs_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#pragma GCC target("avx2,fma,f16c")
// In C++, GCC applies the pragma to code generation but does not define the ISA macros that headers test (sleef.h
// declares its 8-wide functions only under __AVX2__); define them as -mavx2 -mfma -mf16c would.
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
// GCC warns that helpers it generates itself (lambda-to-pointer invokers, inherited constructors) take AVX values
// without AVX enabled; none of them is emitted out of line here: the object's only non-local symbols are the two
// entry points of token_logprobs_kernels.h (checked with nm).
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY_AVX2
#include "token_logprobs_kernels_impl.h"
#endif
