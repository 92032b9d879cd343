// Baseline-ISA copy of the sample row kernel (see sampling_kernels.h): runs on every CPU of the architecture. On
// aarch64 at::vec maps to NEON here; on x86-64 it is the generic array implementation, used only where the CPU lacks
// AVX2 or ATEN_CPU_CAPABILITY=default asks for it.
#define CPU_CAPABILITY DEFAULT
#include "sampling_kernels_impl.h"
