"""Correctness cases of bench/gpu_check.py: each op's cuda / triton backend against an fp64 torch reference (or, for
ops whose reference is fp32 by definition, the torch reference itself) at odd shapes, on the GPU.

A case is `fn(backend, dtype) -> (max_error, tolerance, note)`; it fails when max_error > tolerance or raises.
Errors are measured relative to the reference's scale (max |ref|, at least 1) so one tolerance fits every shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

DEVICE = "cuda"
CaseFn = Callable[[str, torch.dtype], tuple[float, float, str]]


@dataclass(frozen=True)
class Case:
    op: str  # name in tao_engine.ops.registry.all_ops()
    fn: CaseFn
    dtypes: tuple[torch.dtype, ...]


def _scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach().double()
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return float((actual.double() - expected).abs().max()) / scale if expected.numel() else 0.0


def _tol(dtype: torch.dtype, fp32: float = 1e-4, half: float = 1e-2) -> float:
    return fp32 if dtype == torch.float32 else half


def token_logprobs_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.logprobs import token_logprobs

    worst = 0.0
    for rows, vocab in ((1, 7), (7, 1001), (129, 32003)):
        logits = (torch.randn(rows, vocab, device=DEVICE) * 3).to(dtype)
        targets = torch.randint(0, vocab, (rows,), device=DEVICE)
        got = token_logprobs(logits, targets, 0.7, backend=backend)
        want = torch.log_softmax(logits.double() / 0.7, -1).gather(1, targets[:, None]).squeeze(1)
        worst = max(worst, _scaled_error(got, want))
    return worst, _tol(dtype, 1e-5, 1e-5), "[1,7] [7,1001] [129,32003], T=0.7"


def linear_logprobs_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.linear_logprobs import linear_logprobs

    worst = 0.0
    for rows, hidden_size, vocab in ((1, 16, 7), (37, 64, 1003), (129, 96, 5001)):
        hidden = torch.randn(rows, hidden_size, device=DEVICE).to(dtype).requires_grad_()
        weight = (torch.randn(vocab, hidden_size, device=DEVICE) * 0.2).to(dtype).requires_grad_()
        targets = torch.randint(0, vocab, (rows,), device=DEVICE)
        g_lp, g_ent = torch.randn(rows, device=DEVICE), torch.randn(rows, device=DEVICE)
        lp, ent = linear_logprobs(hidden, weight, targets, 0.9, return_entropy=True, backend=backend)
        (lp * g_lp + ent * g_ent).sum().backward()
        h64 = hidden.detach().double().requires_grad_()
        w64 = weight.detach().double().requires_grad_()
        logp = torch.log_softmax(h64 @ w64.T / 0.9, -1)  # [N, V] fp64
        lp64 = logp.gather(1, targets[:, None]).squeeze(1)
        ent64 = -(logp.exp() * logp).sum(-1)
        (lp64 * g_lp.double() + ent64 * g_ent.double()).sum().backward()
        worst = max(worst, _scaled_error(lp, lp64), _scaled_error(ent, ent64))
        worst = max(worst, _scaled_error(hidden.grad, h64.grad), _scaled_error(weight.grad, w64.grad))
    return worst, _tol(dtype, 1e-3, 2e-2), "logprobs, entropy, grad_hidden, grad_weight; 3 shapes"


def _paged_inputs(dtype: torch.dtype, batch: int = 7, hq: int = 9, hkv: int = 3, d: int = 64, block_size: int = 16):
    num_blocks, width = 96, 13
    k_cache = torch.randn(num_blocks, block_size, hkv, d, device=DEVICE).to(dtype)
    v_cache = torch.randn(num_blocks, block_size, hkv, d, device=DEVICE).to(dtype)
    q = torch.randn(batch, hq, d, device=DEVICE).to(dtype)
    tables = torch.stack([torch.randperm(num_blocks, device=DEVICE)[:width] for _ in range(batch)]).int()
    lens = torch.randint(1, width * block_size + 1, (batch,), device=DEVICE)
    lens[0] = 1  # the shortest context
    return q, k_cache, v_cache, tables, lens


def paged_decode_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.paged_attention import paged_decode_attention, paged_decode_attention_reference

    worst = 0.0
    for batch, hq, hkv, d in ((1, 1, 1, 32), (7, 9, 3, 64), (5, 8, 8, 128)):
        q, k_cache, v_cache, tables, lens = _paged_inputs(dtype, batch, hq, hkv, d)
        scale = d**-0.5
        got = paged_decode_attention(q, k_cache, v_cache, tables, lens, scale, backend=backend)
        want = paged_decode_attention_reference(q.double(), k_cache.double(), v_cache.double(), tables, lens, scale)
        worst = max(worst, _scaled_error(got, want))
    return worst, _tol(dtype, 1e-4, 2e-2), "GQA 9/3, MHA 8/8, D 32/64/128, contexts 1..208"


def paged_prefill_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.paged_attention import paged_prefill_attention, paged_prefill_attention_reference

    worst = 0.0
    # (context, query) lengths: whole prompts, extends of a cached prefix (1, 7, 129 new tokens), one long prompt.
    seqs = [(13, 13), (200, 7), (33, 1), (208, 129), (129, 129)]
    for hq, hkv, d in ((1, 1, 32), (9, 3, 64), (8, 8, 128)):
        _, k_cache, v_cache, tables, _ = _paged_inputs(dtype, len(seqs), hq, hkv, d)
        lens = torch.tensor([ctx for ctx, _ in seqs], device=DEVICE, dtype=torch.int32)
        q_lens = torch.tensor([0] + [q_len for _, q_len in seqs], device=DEVICE)
        cu = q_lens.cumsum(0).int()
        q = torch.randn(int(cu[-1]), hq, d, device=DEVICE).to(dtype)
        tables[1:, :2] = tables[0, :2]  # the first two blocks shared by every sequence, like a prompt's samples
        scale, bounds = d**-0.5, (129, 208)
        got = paged_prefill_attention(q, k_cache, v_cache, cu, tables, lens, *bounds, scale, backend=backend)
        want = paged_prefill_attention_reference(
            q.double(), k_cache.double(), v_cache.double(), cu, tables, lens, *bounds, scale
        )
        worst = max(worst, _scaled_error(got, want))
    return worst, _tol(dtype, 1e-4, 2e-2), "q lens 1..129 with cached prefixes, GQA 9/3, MHA 8/8, D 32/64/128"


def write_kv_cache_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.kv_cache import write_kv_cache, write_kv_cache_reference

    k_cache = torch.randn(11, 16, 3, 64, device=DEVICE).to(dtype)
    v_cache = torch.randn_like(k_cache)
    n = 37
    k = torch.randn(n, 3, 64, device=DEVICE)  # fp32 into any cache dtype: the cast is part of the op
    v = torch.randn(n, 3, 64, device=DEVICE)
    slots = torch.randperm(11 * 16, device=DEVICE)[:n]
    slots[::5] = -1  # skipped tokens
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    write_kv_cache_reference(k, v, k_ref, v_ref, slots)
    write_kv_cache(k, v, k_cache, v_cache, slots, backend=backend)
    return max(_scaled_error(k_cache, k_ref), _scaled_error(v_cache, v_ref)), 0.0, "37 tokens, every 5th skipped"


def _sampling_params(rows: int) -> dict[str, torch.Tensor]:
    pick = torch.arange(rows, device=DEVICE)
    return {
        "temperature": torch.tensor([0.0, 0.7, 1.0, 1.3], device=DEVICE)[pick % 4],
        "top_k": torch.tensor([0, 1, 50, 0, 7], device=DEVICE)[pick % 5],
        "top_p": torch.tensor([1.0, 0.9, 0.5], device=DEVICE)[pick % 3],
        "min_p": torch.tensor([0.0, 0.0, 0.05], device=DEVICE)[(pick // 3) % 3],
        "seeds": pick * 7919 + 3,
        "steps": pick % 11,
    }


def _compare_draws(batches, backend: str, with_raw: bool) -> tuple[float, int, int]:
    """Each (logits, params) batch sampled by `backend` and by the reference: (the worst scaled log-prob error over the
    rows that drew the same token, raw log-probs too when `with_raw`; the rows that drew another; the rows in all)."""
    from tao_engine.ops.sampling import sample, sample_reference

    mismatched = total = 0
    worst = 0.0
    for logits, params in batches:
        tokens, logprobs, raw = sample(logits, *params.values(), backend=backend)
        ref_tokens, ref_logprobs, ref_raw = sample_reference(logits, *params.values())
        same = tokens == ref_tokens
        mismatched += int((~same).sum())
        total += logits.shape[0]
        if bool(same.any()):
            worst = max(worst, _scaled_error(logprobs[same], ref_logprobs[same]))
            if with_raw:
                worst = max(worst, _scaled_error(raw[same], ref_raw[same]))
    # A token may differ only where u lands within rounding of a CDF step: allow 1% of rows, fail beyond.
    return (worst if mismatched <= total // 100 else float("inf")), mismatched, total


def sample_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    batches = (((torch.randn(rows, vocab, device=DEVICE) * 4).to(dtype), _sampling_params(rows))
               for rows, vocab in ((1, 7), (60, 1001), (64, 49152)))
    worst, mismatched, total = _compare_draws(batches, backend, with_raw=True)
    return worst, 1e-4, f"{mismatched}/{total} rows drew another token than the reference"


def _cutoff_batches(dtype: torch.dtype):
    for rows, vocab, kind in ((37, 4099, "ties"), (37, 4099, "neg_inf"), (8, 4099, "flat"), (256, 131072, "top_p")):
        logits = torch.randn(rows, vocab, device=DEVICE) * 4
        params = _sampling_params(rows)
        if kind == "ties":
            logits = logits.round() / 2
            params["top_k"] = torch.arange(rows, device=DEVICE) % 13 + 1
        elif kind == "neg_inf":
            logits[:, ::2] = float("-inf")
            params["top_p"] = torch.tensor([1e-6, 0.9999, 0.9], device=DEVICE)[torch.arange(rows, device=DEVICE) % 3]
        elif kind == "flat":
            logits = torch.zeros_like(logits)
        else:
            params["temperature"] = torch.full((rows,), 1.0, device=DEVICE)
            params["top_k"] = torch.zeros(rows, dtype=torch.int64, device=DEVICE)
            params["top_p"] = torch.full((rows,), 0.9, device=DEVICE)
        yield logits.to(dtype), params


def sample_cutoffs_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    """The cutoffs where a selection without sort can go wrong: ties on a coarse grid, -inf columns, k = 1, a tiny
    and a near-1 top-p, flat rows, and the [256, 131072] top-p-only shape of the bench's GPU row."""
    worst, mismatched, total = _compare_draws(_cutoff_batches(dtype), backend, with_raw=False)
    return worst, 1e-4, f"ties, -inf, flat, [256,131072] top-p: {mismatched}/{total} rows differ"


def policy_loss_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.policy_loss import policy_loss, policy_loss_reference

    configs = (
        dict(kl_coef=0.1, kl_type="k3", loss_agg="token_mean"),
        dict(ratio_level="sequence", dual_clip=3.0, loss_agg="seq_mean_token_mean", clip_high=0.28),
        dict(kl_coef=0.05, kl_type="k2", loss_agg="seq_mean_token_sum_norm", max_tokens=200),
    )
    worst = 0.0
    for options in configs:
        b, t = 7, 129
        logprobs = (-torch.rand(b, t, device=DEVICE) * 3).requires_grad_()
        old = logprobs.detach() + torch.randn(b, t, device=DEVICE) * 0.2
        ref = logprobs.detach() + torch.randn(b, t, device=DEVICE) * 0.2
        adv = torch.randn(b, device=DEVICE)
        mask = torch.rand(b, t, device=DEVICE) < 0.8
        mask[3] = False  # an empty sequence
        got = policy_loss(logprobs, old, adv, mask, ref, backend=backend, **options)
        (grad,) = torch.autograd.grad(got.loss, logprobs)
        lp64 = logprobs.detach().clone().requires_grad_()
        want = policy_loss_reference(lp64, old, adv, mask, ref, **options)
        (want_grad,) = torch.autograd.grad(want.loss, lp64)
        for a, e in ((got.loss, want.loss), (got.per_token_loss, want.per_token_loss), (grad, want_grad),
                     (got.clip_fraction, want.clip_fraction), (got.ratio_mean, want.ratio_mean),
                     (got.ratio_max, want.ratio_max), (got.kl_mean, want.kl_mean)):
            worst = max(worst, _scaled_error(a.detach(), e.detach()))
    return worst, 1e-5, "3 configs (token/sequence ratio, dual clip, k2/k3, 3 aggregations); fp32 reference"


def group_advantages_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.advantages import ADVANTAGE_MODES, group_advantages, group_advantages_reference

    worst = 0.0
    for groups, n in ((1, 1), (37, 8), (129, 5)):
        rewards = torch.randn(groups, n, device=DEVICE, dtype=dtype)
        rewards[rewards > 1.5] = float("nan")
        rewards[0] = 1.0  # a zero-variance group
        for mode in ADVANTAGE_MODES:
            got, flags = group_advantages(rewards, mode, 1e-6, backend=backend)
            want, want_flags = group_advantages_reference(rewards, mode, 1e-6)
            worst = max(worst, _scaled_error(got, want), float((flags != want_flags).sum()))
    return worst, 1e-5, "5 modes, NaN rewards, zero-variance groups; fp32 reference"


def rms_norm_case(backend: str, dtype: torch.dtype) -> tuple[float, float, str]:
    from tao_engine.ops.rms_norm import rms_norm

    worst = 0.0
    for rows, hidden in ((1, 7), (37, 577), (129, 2048)):
        x = torch.randn(rows, hidden, device=DEVICE).to(dtype)
        weight = torch.randn(hidden, device=DEVICE).to(dtype)
        got = rms_norm(x, weight, 1e-6, backend=backend)
        x64 = x.double()
        want = weight.double() * x64 * torch.rsqrt(x64.square().mean(-1, keepdim=True) + 1e-6)
        worst = max(worst, _scaled_error(got, want))
    return worst, _tol(dtype, 1e-5, 2e-2), "3 shapes"


CASES = (
    Case("token_logprobs", token_logprobs_case, (torch.float32, torch.bfloat16)),
    Case("linear_logprobs", linear_logprobs_case, (torch.float32, torch.bfloat16)),
    Case("paged_decode_attention", paged_decode_case, (torch.float32, torch.bfloat16)),
    Case("paged_prefill_attention", paged_prefill_case, (torch.float32, torch.bfloat16)),
    Case("write_kv_cache", write_kv_cache_case, (torch.float32, torch.bfloat16)),
    Case("sample", sample_case, (torch.float32, torch.bfloat16)),
    Case("sample", sample_cutoffs_case, (torch.float32, torch.bfloat16)),
    Case("policy_loss", policy_loss_case, (torch.float32,)),
    Case("group_advantages", group_advantages_case, (torch.float32, torch.float64)),
    Case("rms_norm", rms_norm_case, (torch.float32, torch.bfloat16)),
)
