// CPU host code of paged_decode_attention (one query token per sequence over its paged KV cache): argument checks
// with the torch reference's messages, the choice of the per-ISA kernels (paged_attention_kernels.h), the split of
// long contexts when there are too few (sequence, kv head) pairs to keep every thread busy, dynamic scheduling of
// the work units over at::parallel_for's threads, and the merge of split partial results. Schema: csrc/ops.cpp.

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>

#include "../paged_attention.h"
#include "paged_attention_kernels.h"

namespace tao_engine {
namespace {

constexpr const char* kOp = kPagedDecodeOp;
// A split of a sequence's context covers at least this many tokens: below it, the merge and the per-unit setup cost
// more than the extra parallelism gives.
constexpr int64_t kMinTokensPerSplit = 256;
// Below this many K rows read in all (tokens x kv heads), one thread does the whole call: waking the others costs
// more than they save.
constexpr int64_t kMinRowsToParallelize = 2048;

// The shared checks (csrc/paged_attention.h) with this kernel's device.
void check_args(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                const at::Tensor& block_tables, const at::Tensor& context_lens) {
  check_paged_decode_args(q, k_cache, v_cache, block_tables, context_lens, [](const at::Tensor& t) {
    TORCH_CHECK(t.device().is_cpu(), kOp, ": every tensor must be on the CPU for this kernel, got one on ",
                t.device());
  });
}

// Every table entry must name a block (the reference's index_select reads padding entries too, so they must be
// valid as well); every context must fit in its table row.
void check_table_values(const at::Tensor& tables, const at::Tensor& lens, int64_t num_blocks, int64_t block_size) {
  const int64_t width = tables.size(1);
  for (int64_t b = 0; b < tables.size(0); ++b) {
    for (int64_t j = 0; j < width; ++j) {
      const int64_t block = tables.scalar_type() == at::kLong ? tables.const_data_ptr<int64_t>()[b * width + j]
                                                              : tables.const_data_ptr<int32_t>()[b * width + j];
      TORCH_CHECK_INDEX(block >= 0 && block < num_blocks, kOp, ": block_tables[", b, ", ", j, "] = ", block,
                        " is out of range for a cache of ", num_blocks, " blocks (entries, padding included, must be ",
                        "block ids in [0, num_blocks))");
    }
    const int64_t ctx = lens.const_data_ptr<int64_t>()[b];
    TORCH_CHECK_VALUE(ctx >= 0 && ctx <= width * block_size, kOp, ": context_lens[", b, "] = ", ctx,
                      " does not fit block_tables' ", width, " columns of block_size ", block_size,
                      "; widen the table or fix the length");
  }
}

// Splits per sequence so that (sequences x splits) units keep `threads` threads busy (4 units per thread even out
// unequal contexts); 1 when the sequences alone already give every thread two or more. A unit covers all kv heads
// of its sequence: it then reads each cache block front to back, which measured 1.3-1.6x faster here than units of
// one kv head reading rows strided by Hkv * D.
int64_t plan_splits(int64_t sequences, int64_t threads, int64_t max_blocks, int64_t block_size) {
  if (threads == 1 || sequences >= 2 * threads) {
    return 1;
  }
  const int64_t min_blocks = (kMinTokensPerSplit + block_size - 1) / block_size;
  const int64_t wanted = (4 * threads + sequences - 1) / sequences;
  return std::max<int64_t>(1, std::min(wanted, max_blocks / min_blocks));
}

// out[b, h] = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over the splits s of sequence b, M = max_s m_s.
void merge_splits(const float* partial, float* out, int64_t sequences, int64_t splits, int64_t heads, int64_t d) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t unit = cpu::partial_unit_size(heads, d);
  at::parallel_for(0, sequences, std::max<int64_t>(1, 4096 / (splits * unit)), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* first = partial + b * splits * unit;
      for (int64_t h = 0; h < heads; ++h) {
        float max = kNegInf;
        for (int64_t s = 0; s < splits; ++s) {
          max = std::max(max, first[s * unit + heads * d + h]);
        }
        float* o = out + (b * heads + h) * d;
        std::fill(o, o + d, 0.0f);
        float denominator = 0.0f;
        for (int64_t s = 0; s < splits; ++s) {
          const float* part = first + s * unit;
          const float m = part[heads * d + h];
          if (m == kNegInf) {
            continue;  // an empty split (its blocks lie past this sequence's context)
          }
          const float w = std::exp(m - max);
          denominator += w * part[heads * (d + 1) + h];
          for (int64_t i = 0; i < d; ++i) {
            o[i] += w * part[h * d + i];
          }
        }
        const float inv = denominator > 0.0f ? 1.0f / denominator : 0.0f;
        for (int64_t i = 0; i < d; ++i) {
          o[i] *= inv;
        }
      }
    }
  });
}

at::Tensor paged_decode_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                      const at::Tensor& block_tables_in, const at::Tensor& context_lens_in,
                                      double scale) {
  check_args(q_in, k_cache, v_cache, block_tables_in, context_lens_in);
  const int64_t batch = q_in.size(0);
  const int64_t hq = q_in.size(1);
  const int64_t hkv = k_cache.size(2);
  const int64_t d = k_cache.size(3);
  const int64_t block_size = k_cache.size(1);
  at::Tensor q = q_in.to(at::kFloat);  // [B, Hq, D]: a no-op for fp32; bf16/fp16 q is tiny next to the cache
  if (q.stride(2) != 1) {
    q = q.contiguous();
  }
  const at::Tensor tables = block_tables_in.contiguous();
  const at::Tensor lens = context_lens_in.to(at::kLong).contiguous();
  check_table_values(tables, lens, k_cache.size(0), block_size);

  at::Tensor out = at::empty({batch, hq, d}, q.options());  // fp32 [B, Hq, D]
  if (out.numel() == 0) {
    return out.to(q_in.scalar_type());
  }
  int64_t max_blocks = 0;
  int64_t rows = 0;  // K rows the call reads, over all kv heads
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t ctx = lens.const_data_ptr<int64_t>()[b];
    max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
    rows += ctx * hkv;
  }
  const int64_t threads = at::in_parallel_region() || rows < kMinRowsToParallelize ? 1 : at::get_num_threads();
  const int64_t splits = plan_splits(batch, threads, max_blocks, block_size);
  at::Tensor partial;
  if (splits > 1) {
    partial = at::empty({batch * splits * cpu::partial_unit_size(hq, d)}, q.options());
  }

  const cpu::PagedDecodeProblem problem{
      .q = q.const_data_ptr<float>(),
      .q_stride_b = q.stride(0),
      .q_stride_h = q.stride(1),
      .k_cache = k_cache.const_data_ptr(),
      .v_cache = v_cache.const_data_ptr(),
      .cache_dtype = float_kind_of(k_cache.scalar_type()),
      .block_tables = tables.const_data_ptr(),
      .tables_int64 = tables.scalar_type() == at::kLong,
      .table_stride = tables.size(1),
      .context_lens = lens.const_data_ptr<int64_t>(),
      .batch = batch,
      .num_q_heads = hq,
      .num_kv_heads = hkv,
      .head_dim = d,
      .block_size = block_size,
      .scale = static_cast<float>(scale),
  };
  const cpu::PagedDecodeOutput output{
      .num_splits = splits,
      .out = out.mutable_data_ptr<float>(),
      .partial = splits > 1 ? partial.mutable_data_ptr<float>() : nullptr,
  };
  cpu::PagedDecodeUnitsKernel* const kernel = TAO_CPU_KERNEL(paged_decode_units);
  const int64_t units = batch * splits;
  if (threads == 1) {
    kernel(problem, output, 0, units);
  } else {
    // Units differ in cost when contexts differ in length, and at::parallel_for hands each thread one fixed range:
    // instead every thread takes small chunks from a shared counter until none is left.
    const int64_t chunk = std::max<int64_t>(1, units / (8 * threads));
    std::atomic<int64_t> next{0};
    at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
      for (int64_t begin = next.fetch_add(chunk); begin < units; begin = next.fetch_add(chunk)) {
        kernel(problem, output, begin, std::min(units, begin + chunk));
      }
    });
  }
  if (splits > 1) {
    merge_splits(partial.const_data_ptr<float>(), out.mutable_data_ptr<float>(), batch, splits, hq, d);
  }
  return out.to(q_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("paged_decode_attention", &paged_decode_attention_cpu);
}

}  // namespace tao_engine
