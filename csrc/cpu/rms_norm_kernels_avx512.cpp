// AVX-512 copy of the rms_norm kernels (see rms_norm_kernels.h), selected at run time only on CPUs with AVX-512
// F/BW/VL/DQ (cpu_isa.h); avx512_target.h explains how the copy is compiled and linked.
#include "rms_norm_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx512_target.h"
#include "rms_norm_kernels_impl.h"
#endif
