// AVX2 + FMA + F16C copy of the token_logprobs row kernels (see token_logprobs_kernels.h), selected at run time
// only on CPUs that have them (cpu_isa.h); avx2_target.h explains how the copy is compiled and linked.
#include "token_logprobs_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx2_target.h"
#include "token_logprobs_kernels_impl.h"
#endif
