// Included by the `*_kernels_avx2.cpp` files only, after their `*_kernels.h` and before their `*_kernels_impl.h`:
// everything compiled after it targets AVX2 + FMA + F16C, so at::vec picks its AVX2 implementation, as ATen's own
// per-capability files do. Such code must never run on older CPUs, so setup.py links these objects after every
// baseline one: the linker keeps the first copy of an inline function that several objects emit, and that copy
// must be baseline code. (No include guard on purpose: the pragma must apply to the including file.)
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
// without AVX enabled; none of them is emitted out of line: each object's only non-local symbols are its entry
// points (checked with nm).
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY_AVX2
