"""Plain-math fp64 versions of the RL ops, independent of torch: Python floats and loops, written from the formulas
in the op docstrings (tao_engine/ops/advantages.py, tao_engine/ops/policy_loss.py). Gradients come from central
finite differences of the loss value, never from autograd or from the kernels' analytic formulas.

Shared by tests/ops/test_advantages.py and tests/ops/test_policy_loss.py.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def plain_group_advantages(rewards: torch.Tensor, mode: str, eps: float) -> tuple[list[list[float]], list[bool]]:
    """Advantages of each group, straight from the definitions (leave-one-out really leaves one out)."""
    rows = rewards.double().tolist()
    groups = [[r for r in row if not math.isnan(r)] for row in rows]
    # Equality after rounding to fp32, as the op specifies.
    rows32 = rewards.float().tolist()
    zero_variance = [
        len(g) < 2 or len({r for r in row32 if not math.isnan(r)}) == 1 for g, row32 in zip(groups, rows32, strict=True)
    ]

    centered_all: list[float] = []  # every valid entry of the batch, for mean_batch_std
    for g, zv in zip(groups, zero_variance, strict=True):
        mean = sum(g) / len(g) if g else 0.0
        centered_all.extend(0.0 if zv else r - mean for r in g)
    if len(centered_all) >= 2:
        mu = sum(centered_all) / len(centered_all)
        batch_std = math.sqrt(sum((c - mu) ** 2 for c in centered_all) / (len(centered_all) - 1))
    else:
        batch_std = 0.0

    out = []
    for row, g, zv in zip(rows, groups, zero_variance, strict=True):
        k = len(g)
        mean = sum(g) / k if k else 0.0
        result = []
        for r in row:
            if math.isnan(r):
                result.append(0.0)
            elif mode == "none":
                result.append(r)
            elif zv:
                result.append(0.0)
            elif mode == "mean":
                result.append(r - mean)
            elif mode == "mean_std":
                std = math.sqrt(sum((x - mean) ** 2 for x in g) / (k - 1))
                result.append((r - mean) / (std + eps))
            elif mode == "leave_one_out":
                result.append(r - (sum(g) - r) / (k - 1))
            elif mode == "mean_batch_std":
                result.append((r - mean) / (batch_std + eps))
            else:
                raise ValueError(mode)
        out.append(result)
    return out, zero_variance


def _plain_loss(
    lp: list[list[float]], frozen: list[list[float]], old: list[list[float]], adv: list[list[float]],
    mask: list[list[float]], ref: list[list[float]] | None, w: list[list[float]] | None, o: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """`frozen` holds the stop-gradient copy of lp (GSPO's sg[.]); equal to lp when evaluating values."""
    lo, hi = 1.0 - o.get("clip_low", 0.2), 1.0 + o.get("clip_high", 0.2)
    dual, kl_coef, kl_type = o.get("dual_clip"), o.get("kl_coef", 0.0), o.get("kl_type", "k3")
    per_token, seq_sums, seq_tokens = [], [], []
    clipped = ratio_sum = kl_sum = 0.0
    ratio_max = -math.inf
    for b in range(len(lp)):
        tokens = [t for t in range(len(lp[b])) if mask[b][t] != 0]
        weight = sum(mask[b][t] for t in tokens)
        seq_log = sum(mask[b][t] * (frozen[b][t] - old[b][t]) for t in tokens) / weight if tokens else 0.0
        row = [0.0] * len(lp[b])
        for t in tokens:
            m, a = mask[b][t], adv[b][t]
            if o.get("ratio_level", "token") == "token":
                r = math.exp(lp[b][t] - old[b][t])
            else:
                r = math.exp(seq_log) * math.exp(lp[b][t] - frozen[b][t])
            pg = -min(r * a, min(max(r, lo), hi) * a)
            changed = min(max(r, lo), hi) * a < r * a
            if dual is not None and a < 0 and pg > -dual * a:
                pg, changed = -dual * a, True
            if w is not None:
                pg *= w[b][t]
            kl = 0.0
            if ref is not None:
                x = ref[b][t] - lp[b][t]
                kl = {"k1": -x, "k2": 0.5 * x * x, "k3": math.exp(x) - x - 1.0}[kl_type]
            row[t] = m * (pg + kl_coef * kl)
            clipped += m * changed
            ratio_sum += m * r
            kl_sum += m * kl
            ratio_max = max(ratio_max, r)
        per_token.append(row)
        seq_sums.append(sum(row))
        seq_tokens.append(weight)
    total = sum(seq_tokens)
    nonempty = [b for b in range(len(lp)) if seq_tokens[b] > 0]
    agg = o.get("loss_agg", "token_mean")
    if not nonempty:
        loss = 0.0
    elif agg == "token_mean":
        loss = sum(seq_sums) / total
    elif agg == "seq_mean_token_mean":
        loss = sum(seq_sums[b] / seq_tokens[b] for b in nonempty) / len(nonempty)
    elif agg == "seq_mean_token_sum":
        loss = sum(seq_sums) / len(nonempty)
    else:
        loss = sum(seq_sums) / o["max_tokens"] / len(nonempty)
    return {
        "loss": loss,
        "per_token_loss": per_token,
        "clip_fraction": clipped / total if total else 0.0,
        "ratio_mean": ratio_sum / total if total else 0.0,
        "ratio_max": ratio_max if total else 0.0,
        "kl_mean": kl_sum / total if total else 0.0,
    }


def plain_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None = None, token_weights: torch.Tensor | None = None, *, with_grad: bool = True,
    step: float = 1e-6, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Values of the loss and metrics, and (with_grad) d loss / d logprobs [B, T] by central differences in fp64."""
    batch, time = logprobs.shape

    def rows(t: torch.Tensor | None) -> list[list[float]] | None:
        if t is None:
            return None
        t = t.detach().double()
        return (t[:, None].expand(batch, time) if t.dim() == 1 else t).tolist()

    tensors = (logprobs, old_logprobs, advantages, mask, ref_logprobs, token_weights)
    lp, old_l, adv_l, mask_l, ref_l, w_l = (rows(t) for t in tensors)
    out = _plain_loss(lp, lp, old_l, adv_l, mask_l, ref_l, w_l, options)
    out["per_token_loss"] = torch.tensor(out["per_token_loss"], dtype=torch.float64).reshape(batch, time)
    if with_grad:
        grad = torch.zeros(batch, time, dtype=torch.float64)
        for b in range(batch):
            for t in range(time):
                if mask_l[b][t] == 0:
                    continue  # padding is never read: its gradient is 0
                values = []
                for sign in (1.0, -1.0):
                    moved = [row[:] for row in lp]
                    moved[b][t] += sign * step
                    values.append(_plain_loss(moved, lp, old_l, adv_l, mask_l, ref_l, w_l, options)["loss"])
                grad[b, t] = (values[0] - values[1]) / (2 * step)
        out["grad"] = grad
    return out
