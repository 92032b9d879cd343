// Baseline-ISA copy of the apply_rotary kernels (see rotary_kernels.h): runs on every CPU of the architecture.
#define CPU_CAPABILITY DEFAULT
#include "rotary_kernels_impl.h"
