// The ISA macros of AVX2 + FMA + F16C, for the files that raise their ISA with `#pragma GCC target`
// (avx2_target.h, avx512_target.h): in C++, GCC applies the pragma to code generation but does not define the macros
// that headers test (sleef.h declares its 8-wide functions only under __AVX2__); define them as -mavx2 -mfma -mf16c
// would.
#pragma once

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
