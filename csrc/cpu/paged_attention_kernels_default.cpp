// Baseline-ISA copy of the paged_decode_attention kernels (see paged_attention_kernels.h): runs on every CPU of the
// architecture; on x86-64 it is used only where the CPU lacks AVX2 or ATEN_CPU_CAPABILITY=default asks for it.
#define CPU_CAPABILITY DEFAULT
#include "paged_attention_kernels_impl.h"
