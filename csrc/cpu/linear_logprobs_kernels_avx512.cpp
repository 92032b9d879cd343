// AVX-512 copy of the linear_logprobs kernels (see linear_logprobs_kernels.h), selected at run time only on CPUs with AVX-512
// F/BW/VL/DQ (cpu_isa.h); avx512_target.h explains how the copy is compiled and linked.
#include "linear_logprobs_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx512_target.h"
#include "linear_logprobs_kernels_impl.h"
#endif
