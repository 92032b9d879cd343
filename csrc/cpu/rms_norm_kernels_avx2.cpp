// AVX2 + FMA + F16C copy of the rms_norm row kernels (see rms_norm_kernels.h), selected at run time only on CPUs that
// have them (cpu_isa.h); avx2_target.h explains how the copy is compiled and linked.
#include "rms_norm_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx2_target.h"
#include "rms_norm_kernels_impl.h"
#endif
