// CPU host code of rms_norm, add_rms_norm (a residual add fused into the norm that follows it) and their shared
// backward: argument checks, the choice of the per-ISA row kernels (rms_norm_kernels.h), and the split of rows over
// threads with at::parallel_for. Schemas: csrc/ops.cpp; specification: tao_engine/ops/rms_norm.py and add_rms_norm.py.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../float_kind_of.h"
#include "rms_norm_kernels.h"

namespace tao_engine {
namespace {

// Values one thread handles before another is worth waking: a decode step's [64, 576] norm splits over two threads.
// On the AMX Xeon (2 cores, bf16) that took add_rms_norm from 45 to 28 us a call, and with silu_and_mul split alike a
// batch-64 SmolLM2 decode step from 55.8 to 52.0 ms (medians of 3 processes each, alternating). An earlier AMD EPYC
// measurement saw no gain from splitting; there the threads then also waited out a busy machine.
constexpr int64_t kValuesPerTask = 1 << 14;
// Rows whose weight-gradient terms one backward block sums: the blocks' partial sums are then added in block order,
// so the result does not depend on the number of threads.
constexpr int64_t kRowsPerBlock = 32;

void check_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK_VALUE(x.device().is_cpu() && weight.device().is_cpu(), op, ": x and weight must be CPU tensors");
  TORCH_CHECK_VALUE(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.size(0), op,
                    ": weight must be [H] with H = x.size(-1), got x ", x.sizes(), " and weight ", weight.sizes());
  TORCH_CHECK_VALUE(is_float_kind(x.scalar_type()), op, ": x must be float32, bfloat16 or float16, got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(weight.scalar_type() == x.scalar_type() || weight.scalar_type() == at::kFloat, op,
                    ": weight must have x's dtype or float32, got ", weight.scalar_type(), " for x ", x.scalar_type());
}

// x as [N, H] rows with unit stride inside a row (a view when possible, else a copy).
at::Tensor as_rows(const at::Tensor& x) {
  at::Tensor rows = x.reshape({-1, x.size(-1)});
  return rows.stride(1) == 1 || rows.size(1) <= 1 ? rows : rows.contiguous();
}

at::ScalarType out_dtype(const at::Tensor& x, const at::Tensor& weight) {
  return weight.scalar_type() == at::kFloat ? at::kFloat : x.scalar_type();
}

cpu::RmsNormForward describe_forward(const at::Tensor& rows, const at::Tensor& weight, const at::Tensor& out,
                                     double eps) {
  cpu::RmsNormForward p{};
  p.x = rows.const_data_ptr();
  p.x_stride = rows.size(1) <= 1 ? 1 : rows.stride(0);
  p.x_kind = float_kind_of(rows.scalar_type());
  p.weight = weight.const_data_ptr();
  p.weight_fp32 = weight.scalar_type() == at::kFloat && rows.scalar_type() != at::kFloat;
  p.out = out.mutable_data_ptr();
  p.hidden = rows.size(1);
  p.eps = static_cast<float>(eps);
  return p;
}

void run_forward(const cpu::RmsNormForward& p, int64_t rows) {
  cpu::RmsNormForwardKernel* const kernel = TAO_CPU_KERNEL(rms_norm_rows);
  const int64_t grain = std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(p.hidden, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { kernel(p, begin, end); });
}

at::Tensor rms_norm_cpu(const at::Tensor& x, const at::Tensor& weight_in, double eps) {
  check_norm_args("rms_norm", x, weight_in);
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor rows = as_rows(x);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype(x, weight)));
  if (rows.numel() > 0) {
    run_forward(describe_forward(rows, weight, out, eps), rows.size(0));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& x, const at::Tensor& residual,
                                                    const at::Tensor& weight_in, double eps) {
  check_norm_args("add_rms_norm", x, weight_in);
  TORCH_CHECK_VALUE(residual.sizes() == x.sizes() && residual.scalar_type() == x.scalar_type() &&
                        residual.device().is_cpu(),
                    "add_rms_norm: residual must be a CPU tensor of x's shape and dtype, got ", residual.sizes(), " ",
                    residual.scalar_type(), " for x ", x.sizes(), " ", x.scalar_type());
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor rows = as_rows(x);
  const at::Tensor residual_rows = as_rows(residual);
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(out_dtype(x, weight)));
  at::Tensor summed = at::empty(x.sizes(), x.options());
  if (rows.numel() > 0) {
    cpu::RmsNormForward p = describe_forward(rows, weight, out, eps);
    p.residual = residual_rows.const_data_ptr();
    p.residual_stride = residual_rows.size(1) <= 1 ? 1 : residual_rows.stride(0);
    p.summed = summed.mutable_data_ptr();
    run_forward(p, rows.size(0));
  }
  return {out, summed};
}

std::tuple<at::Tensor, at::Tensor> rms_norm_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                         const at::Tensor& weight_in, double eps,
                                                         const std::optional<at::Tensor>& grad_add_in) {
  constexpr const char* op = "rms_norm_backward";
  check_norm_args(op, x_in, weight_in);
  TORCH_CHECK_VALUE(grad_out_in.sizes() == x_in.sizes() && grad_out_in.scalar_type() == out_dtype(x_in, weight_in),
                    op, ": grad_out must have the forward output's shape and dtype, got ", grad_out_in.sizes(), " ",
                    grad_out_in.scalar_type());
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();  // autograd may hand an expanded (stride 0) gradient
  at::Tensor grad_add;
  if (grad_add_in.has_value() && grad_add_in->defined()) {
    TORCH_CHECK_VALUE(grad_add_in->sizes() == x.sizes() && grad_add_in->scalar_type() == x.scalar_type(), op,
                      ": grad_add must have x's shape and dtype, got ", grad_add_in->sizes());
    grad_add = grad_add_in->contiguous();
  }
  const int64_t h = x.size(-1);
  const int64_t n = h == 0 ? 0 : x.numel() / h;
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  at::Tensor partial = at::empty({blocks, h}, x.options().dtype(at::kFloat));
  at::Tensor grad_weight_fp32 = at::zeros({h}, x.options().dtype(at::kFloat));
  if (n > 0 && h > 0) {
    cpu::RmsNormBackward p{};
    p.grad_out = grad_out.const_data_ptr();
    p.x = x.const_data_ptr();
    p.x_kind = float_kind_of(x.scalar_type());
    p.weight = weight.const_data_ptr();
    p.weight_fp32 = weight.scalar_type() == at::kFloat && x.scalar_type() != at::kFloat;
    p.grad_add = grad_add.defined() ? grad_add.const_data_ptr() : nullptr;
    p.grad_x = grad_x.mutable_data_ptr();
    p.grad_weight_partial = partial.mutable_data_ptr<float>();
    p.rows = n;
    p.rows_per_block = kRowsPerBlock;
    p.hidden = h;
    p.eps = static_cast<float>(eps);
    cpu::RmsNormBackwardKernel* const kernel = TAO_CPU_KERNEL(rms_norm_backward_blocks);
    const int64_t grain = std::max<int64_t>(1, kValuesPerTask / (kRowsPerBlock * h));
    at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) { kernel(p, begin, end); });
    // The blocks' partial sums, added in block order for every column (columns split over threads).
    const float* part = partial.const_data_ptr<float>();
    float* gw = grad_weight_fp32.mutable_data_ptr<float>();
    at::parallel_for(0, h, std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(blocks, 1)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t b = 0; b < blocks; ++b) {
                         for (int64_t c = begin; c < end; ++c) {
                           gw[c] += part[b * h + c];
                         }
                       }
                     });
  }
  return {grad_x, grad_weight_fp32.to(weight_in.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("rms_norm", &rms_norm_cpu);
  m.impl("add_rms_norm", &add_rms_norm_cpu);
  m.impl("rms_norm_backward", &rms_norm_backward_cpu);
}

}  // namespace tao_engine
