// Baseline-ISA copy of the token_logprobs row kernels (see token_logprobs_kernels.h): runs on every CPU of the
// architecture. On aarch64 at::vec maps to NEON here; on x86-64 it is the generic array implementation, used only
// where the CPU lacks AVX2 or ATEN_CPU_CAPABILITY=default asks for it.
#define CPU_CAPABILITY DEFAULT
#include "token_logprobs_kernels_impl.h"
