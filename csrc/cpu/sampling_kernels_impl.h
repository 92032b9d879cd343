// The sample row kernel, compiled once per CPU capability: include only from a sampling_kernels_<capability>.cpp that
// defines CPU_CAPABILITY first (see sampling_kernels.h).
//
// Per sampled row: one pass converts the row to fp32 scaled = logits / T in a row buffer (the row itself when it is
// fp32 and T = 1) and takes its max; the top-k cutoff comes from sampling_select.h, the top-p one from
// sampling_top_p.h, min-p is a ratio; the tokens at or above the cutoff are gathered in vocabulary order and the
// reference's CDF inversion runs over their fp32 weights with fp64 running sums. Greedy rows take the first maximum.
// No [B, V] temporary, no sort of the row. raw_logprobs reuses a whole-row mass where the row computed one at T = 1,
// else runs the token_logprobs row kernel of the same CPU capability.
#pragma once

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including sampling_kernels_impl.h"
#endif

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <type_traits>

#include "sampling_kernels.h"
#include "sampling_select.h"
#include "sampling_top_p.h"
#include "sampling_vec.h"

namespace tao_engine::cpu::CPU_CAPABILITY {
namespace {

// delete[] through a type of this file's anonymous namespace: the unique_ptr instantiations below then have internal
// linkage, so the AVX2 object exports no copy of them that the linker could pick for baseline code.
struct DeleteArray {
  template <typename T>
  void operator()(T* p) const {
    delete[] p;
  }
};

template <typename T>
using Buffer = std::unique_ptr<T[], DeleteArray>;

// Row buffers of one task, [V] each, reused row after row. Left uninitialized: a row touches only the pages it uses
// (the candidate buffers hold a few hundred values on most rows).
struct Workspace {
  explicit Workspace(int64_t vocab)
      : scaled(new float[vocab]),
        c_val(new float[vocab]),
        k_val(new float[vocab]),
        sorted(new float[vocab]),
        weights(new float[vocab]),
        mid_w(new float[vocab]),
        c_idx(new int32_t[vocab]),
        k_idx(new int32_t[vocab]),
        block_sums(new double[vocab / kCdfBlock + 1]) {}

  Buffer<float> scaled;  // logits / T
  Buffer<float> c_val;  // the top-k-kept tokens (values, ids), in vocabulary order
  Buffer<float> k_val;  // the tokens the draw runs over; the top-p search's range before that
  Buffer<float> sorted;  // selection and sorting copies
  Buffer<float> weights;  // fp32 weights exp(scaled - row_max)
  Buffer<float> mid_w;  // weights of the top-p search's range
  Buffer<int32_t> c_idx;
  Buffer<int32_t> k_idx;
  Buffer<double> block_sums;  // running sums of the CDF inversion
};

struct RowResult {
  int64_t token;
  float logprob;
  // log of the fp64 mass of exp(logits - max) over the whole row, when the row summed it at T = 1 anyway (top-p
  // without top-k, or no filter); NaN otherwise, and the token_logprobs kernel computes raw_logprob.
  double log_row_mass;
  float row_max;
};

constexpr double kNoRowMass = std::numeric_limits<double>::quiet_NaN();

template <typename scalar_t>
RowResult sample_row(const SamplingRows& rows, int64_t b, Workspace& ws) {
  const scalar_t* row = static_cast<const scalar_t*>(rows.logits) + b * rows.row_stride;
  const int64_t vocab = rows.vocab;
  const float t = rows.temperature[b];
  if (t <= 0.0f) {  // greedy: the filtered distribution is a point mass
    const float row_max = load_row(row, vocab, 1.0f, nullptr);
    return {first_index_of(row, vocab, row_max), 0.0f, kNoRowMass, row_max};
  }
  const float* scaled = ws.scaled.get();
  float raw_max = 0.0f;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (t == 1.0f) {
      scaled = row;  // x / 1 == x: read the row in place
      raw_max = load_row(row, vocab, 1.0f, nullptr);
    } else {
      raw_max = load_row(row, vocab, t, ws.scaled.get());
    }
  } else {
    raw_max = load_row(row, vocab, t, ws.scaled.get());
  }
  // Dividing by T > 0 is monotone under rounding too: max(x / T) == max(x) / T, the reference's row_max.
  const float row_max = raw_max / t;
  const int64_t top_k = rows.top_k[b];
  const float top_p = rows.top_p[b];
  const bool use_k = top_k > 0 && top_k < vocab;
  const bool use_p = top_p < 1.0f;
  double row_mass = kNoRowMass;  // of exp(scaled - row_max) over the whole row, when some pass summed it

  // min-p keeps p >= min_p * p_max, i.e. scaled >= row_max + log(min_p) (-inf when min_p is 0).
  float cutoff = row_max + std::log(rows.min_p[b]);
  TokenSet source{scaled, nullptr, vocab};  // holds every token the filters keep
  if (use_k) {
    int64_t count = 0;
    const float kth = top_k_cutoff(source, top_k, ws.c_val.get(), ws.c_idx.get(), &count, ws.sorted.get());
    source = {ws.c_val.get(), ws.c_idx.get(), count};
    if (!use_p) {
      cutoff = std::max(cutoff, kth);
    }
  }
  if (use_p) {
    const TopPScratch scratch{ws.weights.get(), ws.k_val.get(), ws.mid_w.get(), ws.sorted.get()};
    const TopPCutoff p = top_p_cutoff(source, row_max, top_p, scratch);
    cutoff = std::max(cutoff, p.cutoff);  // >= kth: it is a top-k-kept value
    row_mass = use_k ? kNoRowMass : p.mass;
  }

  // The kept tokens in vocabulary order: the reference's CDF gives a dropped token weight 0, which adds nothing.
  TokenSet kept = source;
  if (source.idx != nullptr || cutoff > kNegInf) {
    const bool in_place = source.val == ws.c_val.get();
    float* out_val = in_place ? ws.c_val.get() : ws.k_val.get();
    int32_t* out_idx = in_place ? ws.c_idx.get() : ws.k_idx.get();
    kept = {out_val, out_idx, compress_ge(source.val, source.idx, source.n, cutoff, out_val, out_idx)};
  }
  if (kept.n == 0) {  // only a row of NaN gets here
    return {0, std::numeric_limits<float>::quiet_NaN(), kNoRowMass, row_max};
  }
  float* weights = ws.weights.get();
  exp_weights(kept.val, kept.n, row_max, weights);
  const CdfDraw draw = invert_cdf(weights, kept.n, sampling_uniform(rows.seeds[b], rows.steps[b]), ws.block_sums.get());
  if (kept.idx == nullptr) {
    row_mass = draw.total;  // no filter: the draw summed the whole row
  }
  const int64_t token = kept.idx != nullptr ? kept.idx[draw.pos] : draw.pos;
  // The reference's (value - row_max) in fp32 minus log(total) computed in fp64 and rounded to fp32.
  const float logprob = (kept.val[draw.pos] - row_max) - static_cast<float>(std::log(draw.total));
  // At T = 1 the scaled values are the logits, so a whole-row mass is log_softmax's normalizer too.
  return {token, logprob, t == 1.0f ? std::log(row_mass) : kNoRowMass, row_max};
}

template <typename scalar_t>
void sample_rows_typed(const SamplingRows& rows, const SampleOutputs& out, int64_t begin, int64_t end) {
  Workspace ws(rows.vocab);
  for (int64_t b = begin; b < end; ++b) {
    const RowResult result = sample_row<scalar_t>(rows, b, ws);
    out.tokens[b] = result.token;
    out.logprobs[b] = result.logprob;
    if (std::isnan(result.log_row_mass)) {
      token_logprobs_rows(rows.raw, out.raw_logprobs, b, b + 1);  // reads the token just written
    } else {
      const scalar_t* row = static_cast<const scalar_t*>(rows.logits) + b * rows.row_stride;
      const float logp =
          (static_cast<float>(row[result.token]) - result.row_max) - static_cast<float>(result.log_row_mass);
      out.raw_logprobs[b] = logp > 0.0f ? 0.0f : logp;  // a log-prob > 0 would be a probability > 1
    }
  }
}

}  // namespace

void sample_rows(const SamplingRows& rows, const SampleOutputs& out, int64_t begin, int64_t end) {
  with_float_kind(rows.dtype, [&](auto tag) { sample_rows_typed<decltype(tag)>(rows, out, begin, end); });
}

}  // namespace tao_engine::cpu::CPU_CAPABILITY
