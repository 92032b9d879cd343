// AVX2 + FMA + F16C copy of the sample row kernel (see sampling_kernels.h), selected at run time only on CPUs
// that have them (cpu_isa.h); avx2_target.h explains how the copy is compiled and linked.
// The comparators given to std::sort and std::nth_element live in an anonymous namespace, so their AVX2
// instantiations cannot stand in for baseline ones at link time (checked with nm).
#include "sampling_kernels.h"

#if TAO_CPU_AVX2_KERNELS
#include "avx2_target.h"
#include "sampling_kernels_impl.h"
#endif
