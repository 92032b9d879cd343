// Baseline-ISA copy of the rms_norm row kernels (see rms_norm_kernels.h): runs on every CPU of the architecture.
#define CPU_CAPABILITY DEFAULT
#include "rms_norm_kernels_impl.h"
