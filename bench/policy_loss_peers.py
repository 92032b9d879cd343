"""Section 3 of bench/bench_policy_loss.py: the GRPO loss from logits [B, T+1, V] (the model's output, the last
position unused), forward + backward to the logits, on a GPU: the torch reference (token_logprobs_reference then
policy_loss_reference), tao (ops.token_logprobs then ops.policy_loss, their fastest backends) and Liger-Kernel's
Triton GRPO loss as the peer. Every provider's loss and logits gradient are checked against the reference's first.

Liger is imported only here, on first use; when it is absent, or there is no GPU, its row says so. All three use the
same loss: token ratio, clip (0.2, 0.28), k3 KL to the reference log-probs at beta 0.04, temperature 0.9, the mean
over the masked tokens of the batch (Liger's per-token output, reduced here).
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from typing import Any

import torch
from op_bench import TOLERANCES, Provider, run_providers, speedups

BETA, CLIP_LOW, CLIP_HIGH, TEMPERATURE = 0.04, 0.2, 0.28, 0.9
PROVIDERS = ("torch", "tao", "liger")


def _liger_provider(device: str) -> Provider:
    if device != "cuda":
        return Provider("liger", None, "Liger's GRPO loss is a Triton kernel: CUDA only")
    if importlib.util.find_spec("liger_kernel") is None:
        return Provider("liger", None, "liger_kernel is not installed (pip install liger-kernel)")
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    except Exception as exc:  # an install that does not match this torch or triton
        return Provider("liger", None, f"liger_kernel fails to import: {type(exc).__name__}: {exc}"[:160])
    return Provider("liger", triton_grpo_loss)


def logits_section(args: argparse.Namespace, reps: int) -> tuple[list[dict[str, object]], dict[str, float], bool]:
    """(rows, ratios, all checks passed)."""
    from tao_engine import ops
    from tao_engine.ops.logprobs import token_logprobs_reference
    from tao_engine.ops.policy_loss import policy_loss_reference

    providers = [Provider("torch", (token_logprobs_reference, policy_loss_reference)),
                 Provider("tao", (ops.token_logprobs, ops.policy_loss)), _liger_provider(args.device)]
    # The CPU runs a small batch (the peer is GPU-only): the check of tao against torch still means something there.
    batch, length, vocab = (2, 9, 101) if args.quick else ((16, 1024, 49152) if args.device == "cuda" else (2, 128,
                                                                                                             49152))
    label = {"section": "from logits", "shape": f"[{batch}, {length}+1, {vocab}] bf16"}
    gen = torch.Generator().manual_seed(0)
    dev = args.device
    logits = (torch.randn(batch, length + 1, vocab, generator=gen) * 2).to(dev, torch.bfloat16)  # [B, T+1, V]
    ids = torch.randint(0, vocab, (batch, length), generator=gen).to(dev)  # [B, T] the completion tokens
    with torch.no_grad():
        logp = token_logprobs_reference(logits[:, :-1].reshape(-1, vocab), ids.reshape(-1), TEMPERATURE)
    logp = logp.view(batch, length)
    old = logp + torch.randn(batch, length, generator=gen).to(dev) * 0.1
    ref = logp + torch.randn(batch, length, generator=gen).to(dev) * 0.1
    adv = torch.randn(batch, generator=gen).to(dev)
    mask = torch.rand(batch, length, generator=gen).to(dev) < 0.9
    # The model gives tao exactly T positions; Liger takes T+1 and skips the last, so each gets its own leaf.
    head = logits[:, :-1].contiguous()  # [B, T, V]

    def make(fn: Any) -> Callable[[], Any]:
        if isinstance(fn, tuple):  # (token_logprobs, policy_loss) of torch or tao
            token_fn, loss_fn = fn
            x = head.clone().requires_grad_()

            def call() -> Any:
                x.grad = None
                lp = token_fn(x.view(-1, vocab), ids.view(-1), TEMPERATURE).view(batch, length)
                out = loss_fn(lp, old, adv, mask, ref, clip_low=CLIP_LOW, clip_high=CLIP_HIGH, kl_type="k3",
                              kl_coef=BETA, loss_agg="token_mean")
                out.loss.backward()
                return out.loss.detach(), x.grad

            return call
        full = logits.clone().requires_grad_()
        tokens = mask.sum()

        def liger_call() -> Any:
            full.grad = None
            # Positional arguments common to every Liger release; inplace=False keeps the logits for the next call.
            per_token = fn(full, old, ref, ids, adv, mask.int(), TEMPERATURE, BETA, CLIP_LOW, CLIP_HIGH, False)[0]
            # where, not a product: the kernel may leave masked positions unwritten (whatever the buffer held).
            loss = torch.where(mask, per_token, 0.0).sum() / tokens
            loss.backward()
            return loss.detach(), full.grad[:, :-1]

        return liger_call

    expected = make(providers[0].fn)()
    nbytes = 3 * head.numel() * head.element_size()  # logits read in the forward and the backward, gradient written
    rows, ok = run_providers(providers, make, expected, TOLERANCES[torch.bfloat16], dev, reps, label, nbytes=nbytes)
    ratios = speedups(rows, "policy loss from logits")
    times = {row["provider"]: row["ms"] for row in rows if isinstance(row["ms"], float)}
    if "tao" in times and "liger" in times:
        ratios["policy loss from logits time tao/liger"] = times["tao"] / times["liger"]
    return rows, ratios, ok
