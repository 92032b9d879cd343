// CPU host code of decode_layer: one decoder layer's decode step over the paged KV cache with the engine's packed
// (oneDNN) weights, the sequence of ops of tao_engine/ops/decode_layer.py's reference run from C++: each op is the
// same registered kernel the reference reaches through the registry, called in the same order on the same tensors,
// so the two agree bit for bit; what this removes is the Python between them (module calls, registry resolution and
// the torch.ops argument parsing of ~12 calls a layer). Schema: csrc/ops.cpp.

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace tao_engine {
namespace {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// mkldnn::_linear_pointwise(X, W, B?, "none", [], None): x [N, I] by a weight prepacked with _reorder_linear_weight,
// called boxed (its Scalar?[] argument has no stable unboxed C++ type across torch versions).
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack;
  stack.reserve(6);
  stack.emplace_back(x);
  stack.emplace_back(weight);
  stack.emplace_back(bias);
  stack.emplace_back(std::string("none"));
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());
  stack.emplace_back(std::string(""));
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("tao_engine::rms_norm");
  return op.call(x, weight, eps);
}

TensorPair add_rms_norm(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps) {
  static const auto op = find_op<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>(
      "tao_engine::add_rms_norm");
  return op.call(x, residual, weight, eps);
}

// -> (the MLP's output [N, H], the residual stream [N, H]), as DecoderLayer.forward returns them.
TensorPair decode_layer_cpu(const at::Tensor& hidden, const std::optional<at::Tensor>& residual_in,
                            const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& slot_mapping,
                            const at::Tensor& block_tables, const at::Tensor& context_lens, at::Tensor& k_cache,
                            at::Tensor& v_cache, at::TensorList norms, at::TensorList weights,
                            const c10::List<std::optional<at::Tensor>>& biases, int64_t num_heads,
                            int64_t num_kv_heads, double eps, double scale) {
  static const auto rotary = find_op<TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, bool)>("tao_engine::apply_rotary");
  static const auto write_kv = find_op<void(const at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&,
                                            const at::Tensor&)>("tao_engine::write_kv_cache");
  static const auto attention = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                   const at::Tensor&, const at::Tensor&, double)>(
      "tao_engine::paged_decode_attention");
  static const auto silu_and_mul =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("tao_engine::silu_and_mul");
  TORCH_CHECK_VALUE(norms.size() == 2 || norms.size() == 4, "decode_layer: norms must be [input, post_attention] "
                    "or [input, post_attention, q_norm, k_norm], got ", norms.size(), " tensors");
  TORCH_CHECK_VALUE(weights.size() == 4 && biases.size() == 4, "decode_layer: weights and biases must hold 4 "
                    "entries each (q|k|v, o, gate|up, down), got ", weights.size(), " and ", biases.size());
  TORCH_CHECK_VALUE(hidden.dim() == 2 && num_heads > 0 && num_kv_heads > 0, "decode_layer: hidden must be [N, H] "
                    "and the head counts positive, got ", hidden.sizes(), ", ", num_heads, ", ", num_kv_heads);
  const int64_t n = hidden.size(0);
  const int64_t head_dim = cos.size(-1);
  const int64_t q_size = num_heads * head_dim, kv_size = num_kv_heads * head_dim;

  at::Tensor normed, residual;
  if (residual_in.has_value()) {
    std::tie(normed, residual) = add_rms_norm(hidden, *residual_in, norms[0], eps);
  } else {
    normed = rms_norm(hidden, norms[0], eps);
    residual = hidden;
  }
  // [N, (Hq + 2 Hkv) D] -> column blocks, as views
  const at::Tensor qkv = packed_linear(normed, weights[0], biases.get(0));
  at::Tensor q = qkv.narrow(1, 0, q_size).view({n, num_heads, head_dim});
  at::Tensor k = qkv.narrow(1, q_size, kv_size).view({n, num_kv_heads, head_dim});
  const at::Tensor v = qkv.narrow(1, q_size + kv_size, kv_size).view({n, num_kv_heads, head_dim});
  if (norms.size() == 4) {
    q = rms_norm(q, norms[2], eps);
    k = rms_norm(k, norms[3], eps);
  }
  std::tie(q, k) = rotary.call(q, k, cos, sin, false);
  write_kv.call(k, v, k_cache, v_cache, slot_mapping);
  const at::Tensor attended = attention.call(q, k_cache, v_cache, block_tables, context_lens, scale);
  const at::Tensor out = packed_linear(attended.reshape({n, q_size}), weights[1], biases.get(1));
  std::tie(normed, residual) = add_rms_norm(out, residual, norms[1], eps);
  const at::Tensor gate_up = packed_linear(normed, weights[2], biases.get(2));  // [N, 2 I]
  const int64_t inter = gate_up.size(1) / 2;
  const at::Tensor act = silu_and_mul.call(gate_up.narrow(1, 0, inter), gate_up.narrow(1, inter, inter));
  return {packed_linear(act, weights[3], biases.get(3)), residual};
}

}  // namespace

// The packed weights are oneDNN tensors (dispatch key MkldnnCPU), the rest plain CPU tensors: the dispatcher picks
// the highest key among all tensor arguments, so the kernel is registered under both.
TORCH_LIBRARY_IMPL(tao_engine, CPU, m) {
  m.impl("decode_layer", &decode_layer_cpu);
}

TORCH_LIBRARY_IMPL(tao_engine, MkldnnCPU, m) {
  m.impl("decode_layer", &decode_layer_cpu);
}

}  // namespace tao_engine
