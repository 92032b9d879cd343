// CPU kernel of group_advantages: group-relative advantages of [P, n] rewards (NaN = no reward), in one pass over
// each group for the statistics and one to write, groups split across threads. The modes and their formulas are
// specified in tao_engine/ops/advantages.py (the torch reference); the schema is in csrc/ops.cpp.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace tao_engine {
namespace {

enum class AdvantageMode { kMean, kMeanStd, kLeaveOneOut, kMeanBatchStd, kNone };

AdvantageMode parse_mode(c10::string_view mode) {
  if (mode == "mean") return AdvantageMode::kMean;
  if (mode == "mean_std") return AdvantageMode::kMeanStd;
  if (mode == "leave_one_out") return AdvantageMode::kLeaveOneOut;
  if (mode == "mean_batch_std") return AdvantageMode::kMeanBatchStd;
  if (mode == "none") return AdvantageMode::kNone;
  TORCH_CHECK_VALUE(
      false, "tao_engine::group_advantages: mode must be one of mean, mean_std, leave_one_out, mean_batch_std, none; "
      "got '", std::string(mode), "'");
  return AdvantageMode::kNone;  // not reached: the check above throws
}

// One group's statistics over its valid (non-NaN) rewards.
struct GroupStats {
  int64_t count = 0;  // valid rewards
  float mean = 0.0f;
  bool zero_variance = true;  // < 2 valid rewards, or all equal
  double sum_sq = 0.0;  // sum of (r - mean)^2 over valid rewards; 0 for a zero-variance group
};

template <typename T>
GroupStats group_stats(const T* row, int64_t stride, int64_t n) {
  GroupStats s;
  double sum = 0.0;  // in fp64: the mean is then the fp32 rounding of the exact mean of the fp32 rewards
  float lowest = std::numeric_limits<float>::infinity();
  float highest = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    const float r = static_cast<float>(row[i * stride]);
    if (std::isnan(r)) continue;
    ++s.count;
    sum += r;
    lowest = std::min(lowest, r);
    highest = std::max(highest, r);
  }
  s.mean = s.count > 0 ? static_cast<float>(sum / static_cast<double>(s.count)) : 0.0f;
  s.zero_variance = s.count < 2 || lowest == highest;
  if (!s.zero_variance) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = static_cast<float>(row[i * stride]);
      if (std::isnan(r)) continue;
      const double c = static_cast<double>(r - s.mean);
      s.sum_sq += c * c;
    }
  }
  return s;
}

// Writes one group's advantages; `scale` multiplies the centered rewards (1 for "mean"). Mode "none" passes raw
// rewards through.
template <typename T>
void write_group(const T* row, int64_t stride, int64_t n, const GroupStats& s, bool raw, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float r = static_cast<float>(row[i * stride]);
    if (std::isnan(r)) {
      out[i] = 0.0f;
    } else if (raw) {
      out[i] = r;
    } else {
      out[i] = s.zero_variance ? 0.0f : (r - s.mean) * scale;
    }
  }
}

float group_scale(AdvantageMode mode, const GroupStats& s, double eps) {
  switch (mode) {
    case AdvantageMode::kMeanStd: {
      const double std = std::sqrt(s.sum_sq / static_cast<double>(std::max<int64_t>(s.count - 1, 1)));
      return static_cast<float>(1.0 / (std + eps));
    }
    case AdvantageMode::kLeaveOneOut:
      return static_cast<float>(static_cast<double>(s.count) / static_cast<double>(std::max<int64_t>(s.count - 1, 1)));
    default:
      return 1.0f;
  }
}

template <typename T>
void group_advantages_impl(
    const at::Tensor& rewards, AdvantageMode mode, double eps, float* out, bool* zero_variance) {
  const T* data = rewards.const_data_ptr<T>();
  const int64_t groups = rewards.size(0);
  const int64_t n = rewards.size(1);
  const int64_t s0 = rewards.stride(0);
  const int64_t s1 = rewards.stride(1);
  // Groups per task: a few thousand rewards, so tiny batches stay on one thread.
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(n, 1));

  if (mode != AdvantageMode::kMeanBatchStd) {
    at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const GroupStats s = group_stats(data + p * s0, s1, n);
        zero_variance[p] = s.zero_variance;
        write_group(data + p * s0, s1, n, s, mode == AdvantageMode::kNone, group_scale(mode, s, eps), out + p * n);
      }
    });
    return;
  }

  // mean_batch_std: the batch std needs every group's sum of squares first; a serial, ordered sum keeps it
  // deterministic whatever the thread count.
  std::vector<GroupStats> stats(static_cast<size_t>(groups));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      stats[p] = group_stats(data + p * s0, s1, n);
    }
  });
  double sum_sq = 0.0;
  int64_t valid = 0;
  for (const GroupStats& s : stats) {
    sum_sq += s.sum_sq;
    valid += s.count;
  }
  const double batch_std = std::sqrt(sum_sq / static_cast<double>(std::max<int64_t>(valid - 1, 1)));
  const float scale = static_cast<float>(1.0 / (batch_std + eps));
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      zero_variance[p] = stats[p].zero_variance;
      write_group(data + p * s0, s1, n, stats[p], false, scale, out + p * n);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> group_advantages_cpu(
    const at::Tensor& rewards, c10::string_view mode_name, double eps) {
  constexpr const char* op = "tao_engine::group_advantages";
  TORCH_CHECK_VALUE(
      rewards.dim() == 2, op, ": rewards must be a 2-D [P, n] tensor (P prompts x n candidates), got shape ",
      rewards.sizes());
  TORCH_CHECK_VALUE(
      rewards.scalar_type() == at::kFloat || rewards.scalar_type() == at::kDouble, op,
      ": rewards must be float32 or float64 (NaN marks a missing reward), got ", rewards.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0, op, ": eps must be a finite number >= 0, got ", eps);
  const AdvantageMode mode = parse_mode(mode_name);
  at::Tensor advantages = at::empty(rewards.sizes(), rewards.options().dtype(at::kFloat));  // [P, n] contiguous
  at::Tensor zero_variance = at::empty({rewards.size(0)}, rewards.options().dtype(at::kBool));  // [P]
  float* out = advantages.mutable_data_ptr<float>();
  bool* flags = zero_variance.mutable_data_ptr<bool>();
  if (rewards.scalar_type() == at::kFloat) {
    group_advantages_impl<float>(rewards, mode, eps, out, flags);
  } else {
    group_advantages_impl<double>(rewards, mode, eps, out, flags);
  }
  return {advantages, zero_variance};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("group_advantages", &group_advantages_cpu);
}

}  // namespace tao_engine
