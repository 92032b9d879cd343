"""For tests/ops/test_policy_loss.py, whose tests run each case on every backend: random inputs, the option cases
that cover every ratio level, aggregation and KL estimator, and the check of one backend against the plain-math fp64
reference (tests/ops/rl_plain_math.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from tao_engine import ops
from tao_engine.ops.policy_loss_args import KL_TYPES, LOSS_AGGS, RATIO_LEVELS
from tests.ops.rl_plain_math import plain_policy_loss
from tests.tolerances import check

METRICS = ("clip_fraction", "ratio_mean", "ratio_max", "kl_mean")


def make_inputs(
    batch: int, time: int, seed: int, *, per_token_adv: bool = False, float_mask: bool = False,
    ref: bool = True, weights: bool = False, spread: float = 0.5, device: torch.device | str = "cpu",
) -> dict:  # fmt: skip
    """Random RL inputs: log-probs < 0, ratios spread enough that both clip bounds bind, one empty sequence, and
    NaN / inf in the padding of every [B, T] input (it must never be read)."""
    gen = torch.Generator().manual_seed(seed)
    lp = -torch.rand(batch, time, generator=gen) * 3.0 - 0.05
    mask = torch.rand(batch, time, generator=gen) < 0.8
    if batch >= 3:
        mask[1] = False
    pad = ~mask
    out = {
        "logprobs": lp,
        "old_logprobs": lp + spread * torch.randn(batch, time, generator=gen),
        "advantages": torch.randn((batch, time) if per_token_adv else (batch,), generator=gen),
        "mask": mask.float() * (0.25 + torch.rand(batch, time, generator=gen)) if float_mask else mask,
        "ref_logprobs": lp + 0.3 * torch.randn(batch, time, generator=gen) if ref else None,
        "token_weights": 0.2 + 1.5 * torch.rand(batch, time, generator=gen) if weights else None,
    }
    out["logprobs"] = out["logprobs"].masked_fill(pad, float("nan"))
    out["old_logprobs"] = out["old_logprobs"].masked_fill(pad, float("inf"))
    for name in ("ref_logprobs", "token_weights"):
        if out[name] is not None:
            out[name] = out[name].masked_fill(pad, float("nan"))
    if per_token_adv:
        out["advantages"] = out["advantages"].masked_fill(pad, float("-inf"))
    return {name: None if t is None else t.to(device) for name, t in out.items()}


def run_backend(inputs: dict, backend: str, **options) -> tuple[ops.PolicyLossOutput, torch.Tensor]:
    """(output, d loss / d logprobs) of one backend."""
    leaf = inputs["logprobs"].clone().requires_grad_()
    args = {**inputs, "logprobs": leaf}
    out = ops.policy_loss(**args, backend=backend, **options)
    out.loss.backward()
    return out, leaf.grad


def check_against_plain(inputs: dict, backend: str, with_grad: bool = True, **options) -> ops.PolicyLossOutput:
    out, grad = run_backend(inputs, backend, **options)
    plain = plain_policy_loss(**inputs, with_grad=with_grad, **options)
    assert out.loss.dim() == 0 and out.loss.dtype == torch.float32
    assert out.per_token_loss.shape == inputs["logprobs"].shape and not out.per_token_loss.requires_grad
    check("policy_loss", out.loss, torch.tensor(plain["loss"], dtype=torch.float64), **inputs, **options)
    check("policy_loss_per_token", out.per_token_loss, plain["per_token_loss"], **inputs, **options)
    for name in METRICS:
        value = getattr(out, name)
        assert value.dim() == 0 and value.dtype == torch.float32 and not value.requires_grad, name
        check("policy_loss_metric", value, torch.tensor(plain[name], dtype=torch.float64), metric=name, **inputs,
              **options)
    assert torch.isfinite(grad).all()
    if with_grad:
        check("policy_loss_grad", grad, plain["grad"], **inputs, **options)
    return out


# Every (ratio level, aggregation, KL) triple; the boolean options cycle through their combinations across cases.
CASES = []
for index, (ratio_level, loss_agg, kl) in enumerate(itertools.product(RATIO_LEVELS, LOSS_AGGS, (None, *KL_TYPES))):
    flags = [bool(index >> bit & 1) for bit in range(4)]
    letters = "".join("DWAF"[i] if flag else "_" for i, flag in enumerate(flags))  # Dual, Weights, Adv [B, T], Float
    CASES.append(
        pytest.param(
            dict(ratio_level=ratio_level, loss_agg=loss_agg, kl=kl, dual=flags[0], weights=flags[1],
                 per_token_adv=flags[2], float_mask=flags[3], seed=index),
            id=f"{ratio_level}-{loss_agg}-{kl or 'nokl'}-{letters}",
        )
    )  # fmt: skip


def case_options(case: dict) -> tuple[dict, dict]:
    """(input kwargs, op options) of one CASES entry."""
    inputs = dict(per_token_adv=case["per_token_adv"], float_mask=case["float_mask"], ref=case["kl"] is not None,
                  weights=case["weights"])  # fmt: skip
    options = dict(ratio_level=case["ratio_level"], loss_agg=case["loss_agg"], clip_low=0.2, clip_high=0.28)
    if case["kl"] is not None:
        options.update(kl_type=case["kl"], kl_coef=0.05)
    if case["dual"]:
        options["dual_clip"] = 2.0
    if case["loss_agg"] == "seq_mean_token_sum_norm":
        options["max_tokens"] = 11
    return inputs, options
