// AVX2 + FMA + F16C copy of the silu_and_mul kernels (see activation_kernels.h), selected at run time only on CPUs
// that have them (cpu_isa.h); avx2_target.h explains how the copy is compiled and linked.
#include "activation_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx2_target.h"
#include "activation_kernels_impl.h"
#endif
