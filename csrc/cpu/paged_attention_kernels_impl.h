// The paged_decode_attention kernels, compiled once per CPU capability: include only from a
// paged_attention_kernels_<capability>.cpp that defines CPU_CAPABILITY first (see paged_attention_kernels.h).
//
// One work unit = one sequence, all its kv heads, one range of its blocks; a block [block_size, Hkv, D] is then
// read front to back. Each K and V row is read once for the G = Hq / Hkv query heads that share it (GQA). Per tile
// of a few blocks (kTileTokens):
//   scores [Hq, tile] = (scale * q) . k_t          (K rows, converted to fp32 first when the cache is not fp32)
//   online softmax: new max m' per head, rescale the running sum l and accumulator acc by exp(m - m') once per tile
//   acc [Hq, D] += exp(scores - m') @ V rows
// All arithmetic is fp32. Each block's successor is prefetched while it is processed: block tables scatter blocks
// over the cache, which defeats the hardware prefetcher at every block boundary.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including paged_attention_kernels_impl.h"
#endif

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "paged_attention_kernels.h"
#include "paged_attention_vec.h"  // fVec, kW, kNegInf and the vector helpers, in this capability's namespace

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

inline int64_t table_entry(const PagedDecodeProblem& p, int64_t b, int64_t j) {
  if (p.tables_int64) {
    return static_cast<const int64_t*>(p.block_tables)[b * p.table_stride + j];
  }
  return static_cast<const int32_t*>(p.block_tables)[b * p.table_stride + j];
}

// Sizes of one call, in the kernels' terms.
struct Geometry {
  int64_t d;  // head_dim
  int64_t dp;  // head_dim rounded up to whole fp32 vectors: the row length of q, acc and converted K/V
  int64_t dv;  // dp / kW
  int64_t hq;
  int64_t hkv;
  int64_t group;  // Hq / Hkv
  int64_t bs;  // block_size
  int64_t bsp;  // block_size rounded up to whole vectors: each block's score slots
};

// scores[qh * stride + t] = qbuf[qh] . k(t, qh / G) for the block's rows t < rows, every query head; K row (t, h) at
// k_rows + (t * Hkv + h) * row. kW tokens at a time; a ragged last chunk is gathered into `tail` (its last row
// repeated) and the slots past `rows` are left for the caller to mask.
template <int64_t kDv>
void score_block(const Geometry& g, const float* qbuf, const float* k_rows, int64_t row, int64_t rows, float* scores,
                 int64_t stride, float* tail) {
  for (int64_t t = 0; t < rows; t += kW) {
    const int64_t valid = std::min(kW, rows - t);
    for (int64_t h = 0; h < g.hkv; ++h) {
      const float* kt = k_rows + (t * g.hkv + h) * row;
      int64_t k_stride = g.hkv * row;
      if (valid < kW) {
        for (int64_t r = 0; r < kW; ++r) {
          std::memcpy(tail + r * g.dp, kt + std::min(r, valid - 1) * k_stride, g.dp * sizeof(float));
        }
        kt = tail;
        k_stride = g.dp;
      }
      for (int64_t i = 0; i < g.group; ++i) {  // the group's query heads share these K rows
        const int64_t qh = h * g.group + i;
        dot_rows<kDv>(qbuf + qh * g.dp, kt, k_stride, g.dv).store(scores + qh * stride + t);
      }
    }
  }
}

// Up to this many tokens (whole blocks) share one online-softmax step: its reductions, exp and accumulator rescale
// are then paid once per tile instead of once per block, which matters most for small blocks.
constexpr int64_t kTileTokens = 64;
constexpr int64_t kMaxTileBlocks = kTileTokens / kW;  // block_size >= 1 is padded to bsp >= kW

// kDv > 0: head_dim is kDv fp32 vectors (fast paths); 0: any head_dim, rows zero padded to whole vectors.
template <typename scalar_t, int64_t kDv>
void decode_units(const PagedDecodeProblem& p, const PagedDecodeOutput& o, int64_t begin, int64_t end) {
  Geometry g{};
  g.d = p.head_dim;
  g.dp = kDv > 0 ? kDv * kW : round_up(g.d, kW);
  g.dv = g.dp / kW;
  g.hq = p.num_q_heads;
  g.hkv = p.num_kv_heads;
  g.group = g.hq / g.hkv;
  g.bs = p.block_size;
  g.bsp = round_up(g.bs, kW);
  const int64_t hq = g.hq;
  const int64_t dp = g.dp;
  const int64_t tile_blocks = std::max<int64_t>(1, kTileTokens / g.bsp);
  const int64_t tile_len = tile_blocks * g.bsp;  // score slots per query head
  const int64_t block_stride = g.bs * g.hkv * g.d;  // elements per cache block
  const int64_t token_bytes = g.hkv * g.d * static_cast<int64_t>(sizeof(scalar_t));
  const int64_t splits = o.num_splits;
  // An fp32 cache whose rows are whole vectors is read in place; any other is converted block by block.
  const bool in_place = std::is_same_v<scalar_t, float> && dp == g.d;
  const auto* k_base = static_cast<const scalar_t*>(p.k_cache);
  const auto* v_base = static_cast<const scalar_t*>(p.v_cache);

  // qbuf [Hq, dp] scale * q | acc [Hq, dp] | scores [Hq, tile_len] | m [Hq] | l [Hq] | rowbuf [bs, Hkv, dp] |
  // tail [kW, dp]
  const FloatBuffer scratch(2 * hq * dp + hq * tile_len + 2 * hq + g.bs * g.hkv * dp + kW * dp);
  float* qbuf = scratch.data;
  float* acc = qbuf + hq * dp;
  float* scores = acc + hq * dp;
  float* m = scores + hq * tile_len;
  float* l = m + hq;
  float* rowbuf = l + hq;
  float* tail = rowbuf + g.bs * g.hkv * dp;

  // Rows (t, h) of a block as fp32: K or V row (t, h) at the result + (t * Hkv + h) * row.
  auto block_rows = [&](const scalar_t* block, int64_t rows, int64_t& row) -> const float* {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (in_place) {
        row = g.d;
        return block;
      }
    }
    rows_to_float(block, g.d, rows * g.hkv, g.d, dp, rowbuf);
    row = dp;
    return rowbuf;
  };

  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t s = unit % splits;
    const int64_t b = unit / splits;
    const int64_t ctx = p.context_lens[b];
    const int64_t blocks = (ctx + g.bs - 1) / g.bs;
    const int64_t per = (blocks + splits - 1) / splits;
    const int64_t first = std::min(blocks, s * per);
    const int64_t last = std::min(blocks, first + per);

    for (int64_t qh = 0; qh < hq; ++qh) {
      const float* q = p.q + b * p.q_stride_b + qh * p.q_stride_h;
      for (int64_t i = 0; i < dp; ++i) {
        qbuf[qh * dp + i] = i < g.d ? q[i] * p.scale : 0.0f;
      }
      m[qh] = kNegInf;
      l[qh] = 0.0f;
    }
    std::fill(acc, acc + hq * dp, 0.0f);

    for (int64_t j0 = first; j0 < last; j0 += tile_blocks) {
      const int64_t n = std::min(tile_blocks, last - j0);
      int64_t offsets[kMaxTileBlocks];
      int64_t rows[kMaxTileBlocks];
      for (int64_t i = 0; i < n; ++i) {
        offsets[i] = table_entry(p, b, j0 + i) * block_stride;
        rows[i] = std::min(g.bs, ctx - (j0 + i) * g.bs);
      }
      // K of every block of the tile, then V: each phase prefetches what it reads next (the next block's K, then
      // the first block's V; the next block's V, then the next tile's first K).
      for (int64_t i = 0; i < n; ++i) {
        if (i + 1 < n) {
          prefetch_range(k_base + offsets[i + 1], rows[i + 1] * token_bytes);
        } else {
          prefetch_range(v_base + offsets[0], rows[0] * token_bytes);
        }
        int64_t row = 0;
        const float* k_rows = block_rows(k_base + offsets[i], rows[i], row);
        score_block<kDv>(g, qbuf, k_rows, row, rows[i], scores + i * g.bsp, tile_len, tail);
        for (int64_t qh = 0; qh < hq; ++qh) {  // slots past the block's rows
          std::fill(scores + qh * tile_len + i * g.bsp + rows[i], scores + qh * tile_len + (i + 1) * g.bsp, kNegInf);
        }
      }
      for (int64_t qh = 0; qh < hq; ++qh) {
        softmax_step(scores + qh * tile_len, n * g.bsp, m[qh], l[qh], acc + qh * dp, dp);
      }
      for (int64_t i = 0; i < n; ++i) {
        if (i + 1 < n) {
          prefetch_range(v_base + offsets[i + 1], rows[i + 1] * token_bytes);
        } else if (j0 + n < last) {
          prefetch_range(k_base + table_entry(p, b, j0 + n) * block_stride,
                         std::min(g.bs, ctx - (j0 + n) * g.bs) * token_bytes);
        }
        int64_t row = 0;
        const float* v_rows = block_rows(v_base + offsets[i], rows[i], row);
        for (int64_t qh = 0; qh < hq; ++qh) {
          accumulate_row_span(acc + qh * dp, scores + qh * tile_len + i * g.bsp, v_rows + (qh / g.group) * row,
                              g.hkv * row, rows[i], g.dv);
        }
      }
    }

    if (splits == 1) {
      for (int64_t qh = 0; qh < hq; ++qh) {
        // l = 0 only for an empty context: the reference's SDPA then gives zeros, and so do we.
        const float inv = l[qh] > 0.0f ? 1.0f / l[qh] : 0.0f;
        float* out = o.out + (b * hq + qh) * g.d;
        for (int64_t i = 0; i < g.d; ++i) {
          out[i] = acc[qh * dp + i] * inv;
        }
      }
    } else {
      float* part = o.partial + unit * partial_unit_size(hq, g.d);
      for (int64_t qh = 0; qh < hq; ++qh) {
        std::memcpy(part + qh * g.d, acc + qh * dp, g.d * sizeof(float));
      }
      std::memcpy(part + hq * g.d, m, hq * sizeof(float));
      std::memcpy(part + hq * (g.d + 1), l, hq * sizeof(float));
    }
  }
}

template <typename scalar_t>
void decode_units_for_dim(const PagedDecodeProblem& p, const PagedDecodeOutput& o, int64_t begin, int64_t end) {
  if constexpr (64 % kW == 0) {
    if (p.head_dim == 64) {
      return decode_units<scalar_t, 64 / kW>(p, o, begin, end);
    }
    if (p.head_dim == 128) {
      return decode_units<scalar_t, 128 / kW>(p, o, begin, end);
    }
  }
  return decode_units<scalar_t, 0>(p, o, begin, end);
}

}  // namespace

void paged_decode_units(const PagedDecodeProblem& problem, const PagedDecodeOutput& output, int64_t begin,
                        int64_t end) {
  with_float_kind(problem.cache_dtype, [&](auto tag) {
    decode_units_for_dim<decltype(tag)>(problem, output, begin, end);
  });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
