// Launcher of the policy_loss CUDA kernels (csrc/cuda/policy_loss.cu), called by csrc/cuda/policy_loss_host.cpp after
// it has parsed the options (csrc/policy_loss_args.h's parse_options, shared with the CPU op) and checked the
// inputs. Formulas: tao_engine/ops/policy_loss.py.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../policy_loss.h"

namespace tao_engine::cuda {

struct PolicyLossArgs {
  StridedRows logprobs, old_logprobs, advantages, ref_logprobs, token_weights;
  const void* mask;  // bool or fp32 [B, T]
  bool mask_is_bool;
  int64_t mask_row_stride, mask_col_stride;
  int64_t batch, time;
  PolicyLossOptions options;
  float* per_token;  // [B, T] contiguous
  float* grad;  // [B, T] contiguous, or nullptr when no gradient is wanted
  float* loss;  // []
  float* stats;  // [4]: clip_fraction, ratio_mean, ratio_max, kl_mean
  SequenceSums* sums;  // [B] scratch
  float* scales;  // [B] scratch: each sequence's factor in the aggregated loss
};

// One block per sequence (its terms and sums), one block for the batch (fixed-order sums: deterministic), then the
// scale of each sequence multiplied into its gradient.
void launch_policy_loss(const PolicyLossArgs& args, cudaStream_t stream);

}  // namespace tao_engine::cuda
