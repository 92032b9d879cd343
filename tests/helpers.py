"""Shared test helpers: the tolerance table (one entry per op and dtype) and tiny random transformers models."""

from __future__ import annotations

from typing import Any

import torch

# (op, dtype) -> (atol, rtol). Op entries compare a backend with the fp64 torch reference; model entries are named.
TOLERANCES: dict[tuple[str, torch.dtype], tuple[float, float]] = {
    ("rms_norm", torch.float32): (1e-5, 1e-5),
    ("rms_norm", torch.float16): (2e-3, 2e-3),
    ("rms_norm", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("silu_and_mul", torch.float32): (1e-5, 1e-5),
    ("silu_and_mul", torch.float16): (2e-3, 2e-3),
    ("silu_and_mul", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("apply_rotary", torch.float32): (1e-5, 1e-5),
    ("apply_rotary", torch.float16): (2e-3, 2e-3),
    ("apply_rotary", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("varlen_causal_attention", torch.float32): (2e-5, 2e-5),
    ("varlen_causal_attention", torch.float16): (3e-3, 3e-3),
    ("varlen_causal_attention", torch.bfloat16): (2e-2, 2e-2),
    ("shared_prefix_attention", torch.float32): (2e-5, 2e-5),
    ("shared_prefix_attention", torch.bfloat16): (2e-2, 2e-2),
    # Per-token completion log-probs of the tiny fp32 model: shared-prompt vs unshared packing vs a padded forward.
    ("completion_logprobs", torch.float32): (1e-4, 1e-5),
    ("token_logprobs", torch.float32): (1e-5, 1e-5),
    # paged_decode_attention (cpp) against fp64 on the same cache values, keyed by q's (= the output's) dtype: fp32
    # math throughout (measured <= 1e-6 in fp32), then one rounding into bf16/fp16 for a half-precision q.
    ("paged_decode_attention", torch.float32): (1e-5, 1e-5),
    ("paged_decode_attention", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("paged_decode_attention", torch.float16): (2e-3, 2e-3),
    # paged_prefill_attention (triton) against fp64 on the same cache values, keyed by q's dtype: fp32 math for a
    # float32 q; half q over a half cache rounds q and the softmax weights to the cache dtype (tensor-core dots), then
    # the output once.
    ("paged_prefill_attention", torch.float32): (1e-5, 1e-5),
    ("paged_prefill_attention", torch.bfloat16): (1.6e-2, 1.6e-2),
    ("paged_prefill_attention", torch.float16): (3e-3, 3e-3),
    # RL ops in fp32 against plain-math fp64 (tests/ops/rl_plain_math.py): values of order 1, a few roundings each.
    ("group_advantages", torch.float32): (1e-5, 1e-5),
    ("policy_loss", torch.float32): (1e-5, 1e-5),
    # d loss / d logprobs against fp64 central differences (step 1e-6): entries of order 1 / (number of tokens).
    ("policy_loss_grad", torch.float32): (1e-6, 1e-4),
    ("token_logprobs", torch.float16): (5e-3, 5e-3),
    ("token_logprobs", torch.bfloat16): (3e-2, 3e-2),
    # sample's log-probs (cpp vs the torch reference) and raw log-probs (vs fp64): fp32 math on the logits' exact
    # values in every dtype, so one fp32-sized tolerance for all three.
    ("sample", torch.float32): (2e-5, 1e-5),
    ("sample", torch.float16): (2e-5, 1e-5),
    ("sample", torch.bfloat16): (2e-5, 1e-5),
    # linear_logprobs (log-probs and entropy; both backends) against fp64 on the same inputs: bf16/fp16 inputs are
    # upcast exactly and everything runs in fp32, so every dtype gets the fp32 margin (a few fp32 roundings of
    # logits of order 10, summed over H <= 64).
    ("linear_logprobs", torch.float32): (2e-5, 1e-5),
    ("linear_logprobs", torch.bfloat16): (2e-5, 1e-5),
    ("linear_logprobs", torch.float16): (2e-5, 1e-5),
    # Its gradients are checked against bounds derived from their reductions: tests/error_bounds.py.
    # RoPE cos/sin against transformers' rotary embedding (same fp32 formula; positions up to 131072).
    ("rotary_cos_sin", torch.float32): (1e-6, 0.0),
    # Our fp32 model against transformers' fp32 eager model: max abs logits difference.
    ("model_logits", torch.float32): (1e-4, 0.0),
    # A bf16 model against the same weights in fp32, as a fraction of the largest |logit| (checked by
    # `assert_close_to_scale`). bf16 keeps 8 mantissa bits; on the `HF_CASES` models both ours and transformers' bf16
    # land at 1-2.5% of the logit scale.
    ("model_logits_scaled", torch.bfloat16): (5e-2, 0.0),
    # Self-certainty (mean KL(uniform || p_t), values of a few nats) of the tiny fp32 model against an fp64 forward.
    ("self_certainty", torch.float32): (1e-4, 1e-5),
    # Tiny fp32 model weights after TAO steps on 2 data-parallel ranks against 1 process on the same batch: the ranks
    # pack micro-batches differently and sum partial gradients in another order (fp32 rounding of gradients of order
    # 1e-3, through AdamW with lr 1e-2 and eps 1e-4, whose update moves at most lr / eps = 100x a gradient change).
    ("data_parallel_weights", torch.float32): (1e-5, 1e-5),
}


def tolerance(op: str, dtype: torch.dtype) -> tuple[float, float]:
    try:
        return TOLERANCES[(op, dtype)]
    except KeyError:
        raise KeyError(f"tests/helpers.py: no tolerance for op {op!r} in {dtype}; add one to TOLERANCES") from None


def assert_close(actual: torch.Tensor, expected: torch.Tensor, op: str, dtype: torch.dtype) -> None:
    atol, rtol = tolerance(op, dtype)
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=rtol)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, op: str, dtype: torch.dtype) -> float:
    """max |actual - expected| <= atol * max |expected|; returns that relative error."""
    atol, _ = tolerance(op, dtype)
    error = ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()
    assert error <= atol, f"{op} in {dtype}: max error is {error:.4f} of the largest |value| (allowed {atol})"
    return error


_TINY = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)

# name -> (model_type, architecture, config overrides). Together they cover every architecture and option we support.
HF_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("llama", "LlamaForCausalLM", {"pad_token_id": 0}),
    "llama3_rope_bias": (
        "llama",
        "LlamaForCausalLM",
        {
            "num_hidden_layers": 3,
            "rope_theta": 500000.0,
            # original context 64 with head_dim 16 puts frequencies in all three llama3 bands.
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "attention_bias": True,
            "mlp_bias": True,
        },
    ),
    "llama_tied": ("llama", "LlamaForCausalLM", {"tie_word_embeddings": True, "rope_scaling": None}),
    "mistral": ("mistral", "MistralForCausalLM", {"sliding_window": None, "rope_theta": 1e6}),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", {"head_dim": 16}),
    "qwen3_head_dim24_bias": ("qwen3", "Qwen3ForCausalLM", {"head_dim": 24, "attention_bias": True}),
}


def hf_config(case: str) -> Any:
    from transformers import AutoConfig

    model_type, arch, overrides = HF_CASES[case]
    kwargs = {**_TINY, **overrides, "architectures": [arch]}
    return AutoConfig.for_model(model_type, **kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter with noise large enough that wiring mistakes (a missed norm, bias or scale) show in
    the logits: norm weights near 1, biases and matrices with unit-order activations."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if "norm" in name:
            value = 1.0 + 0.2 * noise
        elif name.endswith("bias"):
            value = 0.1 * noise
        elif "embed_tokens" in name:
            value = 0.5 * noise
        else:
            value = 0.15 * noise
        param.copy_(value.to(param.dtype))


def make_hf_model(case: str, seed: int = 0) -> Any:
    """A tiny random transformers causal LM (fp32, eager attention, eval mode)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(case), attn_implementation="eager", dtype=torch.float32)
    randomize_(model, seed)
    return model.eval()


def padded_batch(
    lengths: list[int], vocab_size: int, left: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids [B, T], attention mask [B, T] and transformers-style position_ids (cumsum(mask) - 1, clamped)."""
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(0, vocab_size, (len(lengths), t), generator=gen)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for row, n in enumerate(lengths):
        if left:
            mask[row, t - n :] = 1
        else:
            mask[row, :n] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def tiny_model(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Our own tiny random decoder (Llama unless `overrides` say otherwise), randomized by `randomize_`, eval mode."""
    from tao_engine.models import ModelConfig, build_model

    fields = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **_TINY, **overrides}
    model = build_model(ModelConfig(**fields))
    randomize_(model, seed=seed)
    return model.eval()
