// Every schema of tao_engine's compiled ops, in one place (DESIGN.md section 3). Kernels register per device with
// TORCH_LIBRARY_IMPL in csrc/cpu/*.cpp and csrc/cuda/*; autograd formulas and fake (meta) kernels are registered
// from Python in tao_engine/ops/_C_registrations.py, imported when tao_engine.ops.extension loads this module.
//
// The module itself is a bare CPython module: importing it runs the static TORCH_LIBRARY registrations of this
// shared object, and it exposes WITH_CUDA so the `cuda` backends' probe knows whether CUDA kernels were compiled.

#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(tao_engine, m) {
  // logits [N, V] fp32/bf16/fp16, targets [N] int64 -> [N] fp32 log_softmax(logits / temperature)[targets], <= 0.
  m.def("token_logprobs(Tensor logits, Tensor targets, float temperature) -> Tensor");
  // -> [N, V] in logits' dtype: grad_out[:, None] * (onehot(targets) - softmax(logits / temperature)) / temperature.
  m.def("token_logprobs_backward(Tensor grad_out, Tensor logits, Tensor targets, float temperature) -> Tensor");
  // q [B, Hq, D], k_cache/v_cache [num_blocks, block_size, Hkv, D], block_tables [B, M] int32/int64, context_lens [B]
  // -> [B, Hq, D] in q's dtype: each query attends to the first context_lens[b] positions of its blocks (GQA).
  m.def(
      "paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor context_lens, "
      "float scale) -> Tensor");
  // k/v [N, Hkv, D] -> rows slot_mapping [N] int64 of the caches viewed as [num_blocks * block_size, Hkv, D], in
  // place, cast to the cache dtype; negative slots are skipped.
  m.def(
      "write_kv_cache(Tensor k, Tensor v, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slot_mapping) -> ()");
  // rewards [P, n] fp32/fp64 (NaN = no reward) -> (advantages [P, n] fp32, zero_variance [P] bool). Modes:
  // mean, mean_std, leave_one_out, mean_batch_std, none (tao_engine/ops/advantages.py). No autograd.
  m.def("group_advantages(Tensor rewards, str mode, float eps) -> (Tensor, Tensor)");
  // logprobs/old_logprobs/mask(bool|fp32)/ref_logprobs/token_weights [B, T], advantages [B] or [B, T], fp32 ->
  // (loss [] fp32, per_token_loss [B, T], stats [4] = clip_fraction, ratio_mean, ratio_max, kl_mean,
  //  grad_logprobs = d loss / d logprobs [B, T], or [0] when compute_grad is false). tao_engine/ops/policy_loss.py.
  m.def(
      "policy_loss(Tensor logprobs, Tensor old_logprobs, Tensor advantages, Tensor mask, Tensor? ref_logprobs, "
      "Tensor? token_weights, float clip_low, float clip_high, float? dual_clip, str ratio_level, str kl_type, "
      "float kl_coef, str loss_agg, int? max_tokens, bool compute_grad) -> (Tensor, Tensor, Tensor, Tensor)");
  // logits [B, V] fp32/bf16/fp16, temperature/top_p/min_p [B] fp32, top_k/seeds/steps [B] int64 -> (tokens [B]
  // int64, logprobs [B] fp32 under the filtered distribution, raw_logprobs [B] fp32 = log_softmax(logits)[token]):
  // the same tokens as tao_engine/ops/sampling.py's reference. No autograd.
  m.def(
      "sample(Tensor logits, Tensor temperature, Tensor top_k, Tensor top_p, Tensor min_p, Tensor seeds, "
      "Tensor steps) -> (Tensor, Tensor, Tensor)");
  // hidden [N, H], weight [V, H] (each fp32/bf16/fp16), targets [N] int64 -> (logprobs [N] <= 0, entropy [N] >= 0,
  // lse [N]), all fp32, of z = hidden @ weight.T / temperature: log_softmax(z)[targets], -sum p log p, logsumexp(z).
  // Never holds [N, V]: the vocabulary is walked in blocks (csrc/cpu/linear_logprobs.cpp).
  m.def(
      "linear_logprobs(Tensor hidden, Tensor weight, Tensor targets, float temperature) -> (Tensor, Tensor, "
      "Tensor)");
  // grad_logprobs/grad_entropy/lse/entropy [N] fp32 -> (grad_hidden [N, H] in hidden's dtype, grad_weight [V, H] in
  // weight's dtype); a gradient not asked for comes back as an empty [0] tensor.
  m.def(
      "linear_logprobs_backward(Tensor grad_logprobs, Tensor grad_entropy, Tensor hidden, Tensor weight, "
      "Tensor targets, Tensor lse, Tensor entropy, float temperature, bool compute_grad_hidden, "
      "bool compute_grad_weight) -> (Tensor, Tensor)");
  // linear_logprobs for a weight that needs no gradient (frozen LM head, LoRA): the same (logprobs, entropy, lse)
  // plus, per row, mean_weight = E_p[W] [N, H] fp32 and, when entropy_grad, entropy_weight = Cov_p(z, W) [N, H] fp32
  // (else [0]), with which the gradient in hidden is elementwise (csrc/cpu/linear_logprobs_frozen_weight.cpp).
  m.def(
      "linear_logprobs_frozen_weight(Tensor hidden, Tensor weight, Tensor targets, float temperature, "
      "bool entropy_grad) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // x [..., H] fp32/bf16/fp16, weight [H] in x's dtype or fp32 -> weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)
  // in the promoted dtype (fp32 for an fp32 weight): tao_engine/ops/rms_norm.py.
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  // x, residual [..., H] of one dtype -> (rms_norm(x + residual), x + residual), the sum rounded to x's dtype: the
  // residual add of a pre-norm decoder fused into the norm after it (tao_engine/ops/add_rms_norm.py).
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor weight, float eps) -> (Tensor, Tensor)");
  // The backward of both: (grad_x [..., H] in x's dtype, plus grad_add when given; grad_weight [H] in weight's
  // dtype), from grad_out in the forward output's dtype and the forward's normalised input x.
  m.def(
      "rms_norm_backward(Tensor grad_out, Tensor x, Tensor weight, float eps, Tensor? grad_add) -> (Tensor, "
      "Tensor)");
  // gate, up [...] of one float dtype -> silu(gate) * up (tao_engine/ops/activation.py); backward -> (grad_gate,
  // grad_up).
  m.def("silu_and_mul(Tensor gate, Tensor up) -> Tensor");
  m.def("silu_and_mul_backward(Tensor grad_out, Tensor gate, Tensor up) -> (Tensor, Tensor)");
  // q [N, Hq, D], k [N, Hkv, D] of one float dtype, cos/sin [N, D] fp32 -> rotated (q, k), new contiguous tensors
  // (tao_engine/ops/rotary.py); transpose=True applies the adjoint rotation (the backward, on gradients).
  m.def("apply_rotary(Tensor q, Tensor k, Tensor cos, Tensor sin, bool transpose=False) -> (Tensor, Tensor)");
  // One decoder layer's decode step over the paged cache with the engine's packed (oneDNN) weights: hidden [N, H],
  // residual [N, H] or None (the first layer), cos/sin [N, D] fp32, the batch's slot_mapping / block_tables /
  // context_lens, the layer's caches (written), norms [input, post_attention(, q_norm, k_norm)], weights and biases
  // [q|k|v, o, gate|up, down] -> (MLP output, residual stream) (tao_engine/ops/decode_layer.py).
  m.def(
      "decode_layer(Tensor hidden, Tensor? residual, Tensor cos, Tensor sin, Tensor slot_mapping, "
      "Tensor block_tables, Tensor context_lens, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor[] norms, "
      "Tensor[] weights, Tensor?[] biases, int num_heads, int num_kv_heads, float eps, float scale) -> "
      "(Tensor, Tensor)");
}

namespace {

PyModuleDef tao_engine_c_module = {
    PyModuleDef_HEAD_INIT,
    "tao_engine._C",
    "tao_engine's compiled kernels; the ops live in torch.ops.tao_engine once this module is imported.",
    -1,
    nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&tao_engine_c_module);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef TAO_WITH_CUDA
  PyObject* with_cuda = Py_True;
#else
  PyObject* with_cuda = Py_False;
#endif
  // PyModule_AddObjectRef does not steal the reference (Python >= 3.10, our floor).
  if (PyModule_AddObjectRef(module, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
