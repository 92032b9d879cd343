// Baseline-ISA copy of the silu_and_mul kernels (see activation_kernels.h): runs on every CPU of the architecture.
#define CPU_CAPABILITY DEFAULT
#include "activation_kernels_impl.h"
