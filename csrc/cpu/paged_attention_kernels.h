// Kernels of paged_decode_attention, compiled once per CPU capability as ATen does: the same source
// (paged_attention_kernels_impl.h) is built for the baseline ISA (namespace DEFAULT) and, on x86-64 with GCC, for
// AVX2 + FMA + F16C (namespace AVX2); csrc/cpu/paged_attention.cpp (host code: checks, split planning, threads)
// picks one at run time. The entry point takes raw pointers only, so the per-ISA translation units stay light.
#pragma once

#include <cstdint>

#include "../float_kind.h"
#include "cpu_isa.h"  // TAO_CPU_AVX2_KERNELS, use_avx2_kernels()

namespace tao_engine::cpu {

// One checked paged_decode_attention call. Sequence b's context is the first context_lens[b] positions of the blocks
// its table row lists; query head qh reads kv head qh / (Hq / Hkv).
struct PagedDecodeProblem {
  const float* q;  // [B, Hq, D] fp32; head (b, qh) at q + b * q_stride_b + qh * q_stride_h, its D values contiguous
  int64_t q_stride_b;
  int64_t q_stride_h;
  const void* k_cache;  // [num_blocks, block_size, Hkv, D], contiguous, in cache_dtype
  const void* v_cache;  // same shape, strides and dtype as k_cache
  FloatKind cache_dtype;
  const void* block_tables;  // [B, >= ceil(context_len / block_size)] block ids in [0, num_blocks)
  bool tables_int64;  // int64 entries, else int32
  int64_t table_stride;  // entries between table rows
  const int64_t* context_lens;  // [B], each in [0, table width * block_size]; 0 gives a zero output row
  int64_t batch;  // B
  int64_t num_q_heads;  // Hq, a multiple of Hkv
  int64_t num_kv_heads;  // Hkv
  int64_t head_dim;  // D
  int64_t block_size;
  float scale;  // softmax scale applied to q . k
};

// Where the work units write. Unit u = (b, split s) with u = b * num_splits + s covers every kv head of sequence b
// over blocks [s * per, (s + 1) * per) of its table, per = ceil(blocks_b / num_splits).
struct PagedDecodeOutput {
  int64_t num_splits;
  // num_splits == 1: [B, Hq, D] fp32, contiguous, the normalised attention output.
  float* out;
  // num_splits > 1: per unit, partial_unit_size(Hq, D) floats: the unnormalised sum of exp(s - m) v [Hq, D], then
  // each head's running max m [Hq], then its sum of exp(s - m) [Hq].
  float* partial;
};

inline int64_t partial_unit_size(int64_t heads, int64_t head_dim) {
  return heads * (head_dim + 2);
}

// Runs work units [begin, end) of one call.
using PagedDecodeUnitsKernel = void(const PagedDecodeProblem& problem, const PagedDecodeOutput& output,
                                    int64_t begin, int64_t end);

TAO_CPU_KERNELS(
    PagedDecodeUnitsKernel paged_decode_units;
)

}  // namespace tao_engine::cpu
