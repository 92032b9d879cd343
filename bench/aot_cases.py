"""The launches bench/aot_check.py compiles: every Triton kernel of kernels/, through the launchers the ops call,
at the shapes of SmolLM2-135M, Llama-3-8B and Qwen2.5-7B in bf16 and fp32.

A case calls a launcher the way tao_engine.ops does (the op's `triton` backend function, or the kernel module's
launcher with the arguments that backend passes) on CPU tensors; under bench/aot_standin.py's capture every kernel
launch it makes is recorded instead of run. Tensors are `torch.empty`: nothing reads their values, and big ones
(logits [N, V], KV caches) are only address space.

What the launchers decide from the device is given the target's value: split-K for attention is chosen for the
target's SMs (`programs=`). The integer arguments that Triton specialises (== 1 folded, % 16 == 0 marked) take, across
the cases, each value class a real launch can give them (for example RMSNorm's rows per backward program: 1, a
multiple of 16, neither), so every kernel variant a launcher can produce on a GPU is compiled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


# From each model's config.json (hidden_size, num_attention_heads, num_key_value_heads, head_dim, vocab_size).
MODELS = (
    ModelShape("SmolLM2-135M", 576, 9, 3, 64, 49152),
    ModelShape("Llama-3-8B", 4096, 32, 8, 128, 128256),
    ModelShape("Qwen2.5-7B", 3584, 28, 4, 128, 152064),
)
DTYPES = (torch.bfloat16, torch.float32)
BLOCK_SIZE = 16  # tokens per KV block: EngineConfig's default


@dataclass(frozen=True)
class Case:
    label: str  # "<model> <dtype> <what>"
    run: Callable[[], object]  # calls the launcher(s); its Triton launches are captured


def _backend(op: str) -> Callable[..., object]:
    """The `triton` backend function of an op: its argument handling and launch, without the device check."""
    import tao_engine.ops  # noqa: F401  (registers every op)
    from tao_engine.ops.registry import all_ops

    chosen = all_ops()[op]
    run = chosen.backends["triton"].fn  # takes the call's arguments bound to the op's signature
    return lambda *args, **kwargs: run(chosen.bind(args, kwargs))


def _kernels(name: str):
    from tao_engine.ops.triton_support import kernel_module

    return kernel_module(name)


def _rms_norm(m: ModelShape, dtype: torch.dtype, rows: int) -> None:
    # Forward and backward. Backward programs on CPU tensors: 8 (kernels/rms_norm.py), so rows 5 / 4096 / 4100 give
    # 1 (folded), 512 (% 16) and 513 rows per program: the three classes a GPU's 2 x SMs programs give too.
    x = torch.empty(rows, m.hidden, dtype=dtype, requires_grad=True)
    w = torch.empty(m.hidden, dtype=dtype, requires_grad=True)
    y = _backend("rms_norm")(x, w, 1e-5)
    torch.autograd.grad(y, [x, w], torch.empty_like(y))


def _token_logprobs(m: ModelShape, dtype: torch.dtype) -> None:
    # The training pattern: logits[:, :-1] of [B, T, V] against input_ids[:, 1:], forward and backward.
    logits = torch.empty(2, 1025, m.vocab, dtype=dtype, requires_grad=True)
    ids = torch.zeros(2, 1025, dtype=torch.int64)
    shifted = logits[:, :-1]
    out = _backend("token_logprobs")(shifted, ids[:, 1:], 0.7)
    torch.autograd.grad(out, [shifted], torch.empty_like(out))  # grad w.r.t. the slice: no [B, T, V] zero fill


def _linear_logprobs(m: ModelShape, dtype: torch.dtype, rows: int, frozen: bool, entropy: bool) -> None:
    # The Triton kernels see only [rows, chunk] fp32 logit blocks (chunk from rows and V); the hidden size enters the
    # GEMMs (torch.mm), not the kernels, so H = 64 here keeps those CPU GEMMs cheap and compiles the same kernels.
    hidden = torch.zeros(rows, 64, dtype=dtype, requires_grad=True)
    weight = torch.zeros(m.vocab, 64, dtype=dtype, requires_grad=not frozen)
    targets = torch.zeros(rows, dtype=torch.int64)
    lp, ent = _backend("linear_logprobs")(hidden, weight, targets, 0.9, return_entropy=True)
    outputs = [lp, ent] if entropy else [lp]
    wrt = [hidden] if frozen else [hidden, weight]
    torch.autograd.grad(outputs, wrt, [torch.ones_like(t) for t in outputs])


def _kv_cache(m: ModelShape, dtype: torch.dtype, tokens: int) -> None:
    blocks = 64 + tokens // BLOCK_SIZE
    k = torch.empty(tokens, m.kv_heads, m.head_dim, dtype=dtype)
    cache = torch.empty(blocks, BLOCK_SIZE, m.kv_heads, m.head_dim, dtype=dtype)
    slots = torch.arange(tokens, dtype=torch.int64)
    _backend("write_kv_cache")(k, torch.empty_like(k), cache, torch.empty_like(cache), slots)


def _paged(m: ModelShape, dtype: torch.dtype, seqs: int, context: int):
    per_seq = math.ceil(context / BLOCK_SIZE)
    cache = torch.empty(seqs * per_seq, BLOCK_SIZE, m.kv_heads, m.head_dim, dtype=dtype)
    tables = torch.arange(seqs * per_seq, dtype=torch.int32).view(seqs, per_seq)
    lens = torch.full((seqs,), context, dtype=torch.int32)
    return cache, tables, lens


def _decode(m: ModelShape, dtype: torch.dtype, seqs: int, context: int, programs: int) -> None:
    cache, tables, lens = _paged(m, dtype, seqs, context)
    q = torch.empty(seqs, m.heads, m.head_dim, dtype=dtype)
    _kernels("paged_attention").paged_decode_attention(q, cache, torch.empty_like(cache), tables, lens,
                                                       m.head_dim**-0.5, programs=programs)


def _prefill(m: ModelShape, dtype: torch.dtype, seqs: int, new: int, context: int, programs: int) -> None:
    cache, tables, lens = _paged(m, dtype, seqs, context)
    q = torch.empty(seqs * new, m.heads, m.head_dim, dtype=dtype)
    cu = torch.arange(0, seqs * new + 1, new, dtype=torch.int32)
    _kernels("paged_prefill_attention").paged_prefill_attention(
        q, cache, torch.empty_like(cache), cu, tables, lens, new, context, m.head_dim**-0.5, programs=programs
    )


def _sample(m: ModelShape, dtype: torch.dtype, rows: int) -> None:
    logits = torch.empty(rows, m.vocab, dtype=dtype)
    per_row = dict(temperature=torch.full((rows,), 0.7), top_k=torch.full((rows,), 50, dtype=torch.int64),
                   top_p=torch.full((rows,), 0.9), min_p=torch.zeros(rows), seeds=torch.zeros(rows, dtype=torch.int64),
                   steps=torch.zeros(rows, dtype=torch.int64))
    _backend("sample")(logits, *per_row.values())


def model_cases(m: ModelShape, dtype: torch.dtype, programs: int, quick: bool) -> list[Case]:
    """Every model-shaped launch; `programs`: the target's `gpu_programs` (split-K choices)."""
    name = f"{m.name} {str(dtype).removeprefix('torch.')}"
    cases = [
        Case(f"{name} rms_norm 4096 rows", lambda: _rms_norm(m, dtype, 4096)),
        Case(f"{name} token_logprobs [2, 1024] fwd+bwd", lambda: _token_logprobs(m, dtype)),
        Case(f"{name} linear_logprobs 256 rows", lambda: _linear_logprobs(m, dtype, 256, False, True)),
        Case(f"{name} linear_logprobs frozen W 256 rows", lambda: _linear_logprobs(m, dtype, 256, True, True)),
        Case(f"{name} write_kv_cache 4096 tokens", lambda: _kv_cache(m, dtype, 4096)),
        Case(f"{name} decode 256 seqs x 4096", lambda: _decode(m, dtype, 256, 4096, programs)),
        Case(f"{name} decode 1 seq x 32768 (split-K)", lambda: _decode(m, dtype, 1, 32768, programs)),
        Case(f"{name} prefill 8 x 512", lambda: _prefill(m, dtype, 8, 512, 512, programs)),
        Case(f"{name} sample 64 rows", lambda: _sample(m, dtype, 64)),
    ]
    if quick:
        return cases
    return cases + [
        Case(f"{name} rms_norm 5 rows", lambda: _rms_norm(m, dtype, 5)),
        Case(f"{name} rms_norm 4100 rows", lambda: _rms_norm(m, dtype, 4100)),
        # 3000 rows: chunks of 5592 columns, not a multiple of 16; entropy without gradient (frozen W, no entropy_grad
        # kernel flag) and a single token.
        Case(f"{name} linear_logprobs 3000 rows", lambda: _linear_logprobs(m, dtype, 3000, False, True)),
        Case(f"{name} linear_logprobs frozen W, log-probs only", lambda: _linear_logprobs(m, dtype, 256, True, False)),
        Case(f"{name} linear_logprobs 1 row", lambda: _linear_logprobs(m, dtype, 1, False, True)),
        Case(f"{name} write_kv_cache 1 token", lambda: _kv_cache(m, dtype, 1)),
        Case(f"{name} decode 7 seqs x 1000", lambda: _decode(m, dtype, 7, 1000, programs)),
        Case(f"{name} extend 64 seqs x 1 over 4096", lambda: _prefill(m, dtype, 64, 1, 4096, programs)),
        Case(f"{name} extend 8 seqs x 8 over 4096", lambda: _prefill(m, dtype, 8, 8, 4096, programs)),
        Case(f"{name} extend 1 seq x 4 over 32768 (split-K)", lambda: _prefill(m, dtype, 1, 4, 32768, programs)),
        Case(f"{name} prefill 2 x 2048", lambda: _prefill(m, dtype, 2, 2048, 2048, programs)),
        Case(f"{name} sample 1 row", lambda: _sample(m, dtype, 1)),
    ]


def _advantages(groups: int, n: int, mode: str) -> None:
    _backend("group_advantages")(torch.empty(groups, n, dtype=torch.float32), mode, 1e-6)


def _policy_loss(batch: int, time: int, grad: bool, ref: bool, weights: bool, **options: object) -> None:
    logprobs = torch.empty(batch, time, requires_grad=grad)
    inputs = dict(old_logprobs=torch.empty(batch, time), advantages=torch.empty(batch),
                  mask=torch.ones(batch, time, dtype=torch.bool))
    if ref:
        inputs["ref_logprobs"] = torch.empty(batch, time)
    if weights:
        inputs["token_weights"] = torch.empty(batch, time)
    with torch.set_grad_enabled(grad):
        out = _backend("policy_loss")(logprobs, **inputs, **options)
        if grad:
            torch.autograd.grad(out.loss, [logprobs])


# The RL algorithms' loss settings (tao_engine/rl/algorithms.py), each with and without a KL reference.
ALGORITHM_LOSSES = {
    "grpo": dict(loss_agg="seq_mean_token_mean"),
    "dr_grpo": dict(loss_agg="seq_mean_token_sum_norm", max_tokens=1024),
    "dapo": dict(loss_agg="token_mean", clip_high=0.28),
    "gspo": dict(loss_agg="seq_mean_token_mean", ratio_level="sequence"),
    "dual_clip": dict(loss_agg="token_mean", dual_clip=3.0),
    "seq_mean_token_sum": dict(loss_agg="seq_mean_token_sum"),
}


def rl_cases(quick: bool) -> list[Case]:
    """The RL ops: their shapes come from the batch, not the model; fp32 throughout."""
    modes = ("mean_std", "mean_batch_std") if quick else ("mean", "mean_std", "leave_one_out", "mean_batch_std", "none")
    cases = [Case(f"advantages {mode} [64, 8]", lambda mode=mode: _advantages(64, 8, mode)) for mode in modes]
    if not quick:
        cases.append(Case("advantages mean_std [3, 1000]", lambda: _advantages(3, 1000, "mean_std")))
    kl_types = ("k3",) if quick else ("k1", "k2", "k3")
    algorithms = ("grpo",) if quick else tuple(ALGORITHM_LOSSES)
    for algo in algorithms:
        options = ALGORITHM_LOSSES[algo]
        cases.append(Case(f"policy_loss {algo} [64, 2048] train", lambda o=options: _policy_loss(64, 2048, True, False,
                                                                                              False, **o)))
        for kl in kl_types:
            cases.append(Case(f"policy_loss {algo} KL {kl} train", lambda o=options, kl=kl: _policy_loss(
                64, 2048, True, True, False, kl_coef=0.05, kl_type=kl, **o)))
    if not quick:
        cases += [
            Case("policy_loss grpo token weights train", lambda: _policy_loss(64, 2048, True, False, True,
                                                                              **ALGORITHM_LOSSES["grpo"])),
            Case("policy_loss grpo no grad [64, 300]", lambda: _policy_loss(64, 300, False, False, False,
                                                                            **ALGORITHM_LOSSES["grpo"])),
        ]
    return cases


def all_cases(programs: int, quick: bool) -> list[Case]:
    models = MODELS[:1] if quick else MODELS
    dtypes = DTYPES[:1] if quick else DTYPES
    cases = [case for m in models for dtype in dtypes for case in model_cases(m, dtype, programs, quick)]
    return cases + rl_cases(quick)
