// exp(x) for the CPU kernels that need the same fp32 values on every ISA (token_logprobs, sample): compiled once per
// CPU capability, so include it only from a `*_kernels_impl.h` (CPU_CAPABILITY defined; see cpu_isa.h).
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including vec_exp.h"
#endif

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

// exp(x) from Vectorized arithmetic alone, identical on every capability (ATen's generic exp calls scalar std::exp
// per lane). Callers pass x = value - max <= 0 (or a hair above, in the backward). x = n*ln2 + r with |r| <= ln2/2;
// exp(r) by its Taylor series to r^7 (truncation below 2e-8 relative); 2^n assembled in the exponent bits, which is
// exact for n >= -126. Below x = -87 (including -inf, where the arithmetic gives NaN) the result is replaced by
// exactly 0; a NaN x stays NaN (NaN < -87 is false).
inline at::vec::Vectorized<float> vexp(const at::vec::Vectorized<float>& x) {
  using fVec = at::vec::Vectorized<float>;
  using iVec = at::vec::Vectorized<int32_t>;
  const fVec lo(-87.0f);
  // Adding 1.5 * 2^23 rounds x/ln2 to the integer n and leaves n in the low mantissa bits; the extra 127 is the
  // exponent bias, so shifting those bits up by 23 yields the fp32 bit pattern of 2^n.
  const fVec shifter(12582912.0f + 127.0f);
  const fVec k = at::vec::fmadd(x, fVec(1.44269504088896341f), shifter);
  const fVec n = k - shifter;
  // ln2 split in two: the high part has few mantissa bits, so n * ln2_hi is exact.
  fVec r = x - n * fVec(0.693145751953125f);
  r = r - n * fVec(1.428606765330187e-06f);
  fVec p(1.0f / 5040.0f);
  p = at::vec::fmadd(p, r, fVec(1.0f / 720.0f));
  p = at::vec::fmadd(p, r, fVec(1.0f / 120.0f));
  p = at::vec::fmadd(p, r, fVec(1.0f / 24.0f));
  p = at::vec::fmadd(p, r, fVec(1.0f / 6.0f));
  p = at::vec::fmadd(p, r, fVec(0.5f));
  p = at::vec::fmadd(p, r, fVec(1.0f));
  p = at::vec::fmadd(p, r, fVec(1.0f));
  const fVec pow2n = at::vec::cast<float>(at::vec::cast<int32_t>(k) << iVec(23));
  return fVec::blendv(p * pow2n, fVec(0.0f), x < lo);
}

}  // namespace
}  // namespace tao_engine::cpu::CPU_CAPABILITY
