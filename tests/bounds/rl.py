"""Error bounds of the RL ops (group advantages, the clipped policy loss) against their plain fp64 math, derived from
the computation; tests/error_bounds.py states the rounding model.

group_advantages, per group of k valid rewards (mean m, sample std s), in fp32 (u):
- the mean sums k terms: LAMBDA sqrt(k) u sum |r| / k, plus the division; a centered value r - m then carries that
  and one rounding of |r - m|;
- the std sums k squares of centered values: relative LAMBDA sqrt(k) u plus the squares' and the centering's error
  (2 m_err / s), halved by the square root, plus the sqrt's and the division's roundings; mean_batch_std takes its
  std over all K valid rewards of the batch the same way;
- the advantage (r - m) / (s + eps) adds the centered value's error over s and rel(s) of the result.
policy_loss, per token with ratio r = exp(lp - old) (GSPO: exp of the sequence's mask-weighted mean of lp - old,
a sum of T terms), each product and the exp a few u: the token's loss carries rel(r) + 4 u of its policy term
|A| w max(r, 1 + clip_high) (or dual_clip |A| w) and 6 u of its KL term's magnitude (k3 = e^x - x - 1 cancels near
x = 0: its terms e^x + |x| + 1 count); the aggregations sum B T tokens (LAMBDA sqrt(BT) u) with the scales c_b;
the gradient has the same terms' magnitudes (GSPO's adds the sequence mean's), and the reference's central
differences with step h add their own fp64 rounding, eps_64 |loss| / h.
"""

from __future__ import annotations

from typing import Any

import torch

from tests.error_bounds import LAMBDA, unit_roundoff

U32 = unit_roundoff(torch.float32)


def _sum_error(count: torch.Tensor) -> torch.Tensor:
    return (LAMBDA * count.clamp(min=1).sqrt() + 2) * U32  # relative to the sum of |terms|


def group_advantages_bound(rewards: torch.Tensor, mode: str, eps: float = 1e-6) -> torch.Tensor:
    """[P, n] bound on |advantages - plain fp64|, rewards [P, n] with NaN = no reward (advantage exactly 0)."""
    r = rewards.detach().double().cpu()
    valid = ~torch.isnan(r)
    x = torch.where(valid, r, 0.0)
    k = valid.sum(-1, keepdim=True).double()  # [P, 1]
    mean = x.sum(-1, keepdim=True) / k.clamp(min=1)
    mean_err = _sum_error(k) * x.abs().sum(-1, keepdim=True) / k.clamp(min=1)
    centered = torch.where(valid, x - mean, 0.0)
    centered_err = mean_err + U32 * centered.abs()
    if mode == "none":
        return torch.zeros_like(r)
    if mode == "mean":
        bound = centered_err
    elif mode == "leave_one_out":  # r - (S - r) / (k - 1)
        bound = _sum_error(k) * x.abs().sum(-1, keepdim=True) / (k - 1).clamp(min=1) + 3 * U32 * (
            x.abs() + x.abs().sum(-1, keepdim=True) / (k - 1).clamp(min=1))
    else:
        if mode == "mean_std":
            count, squares = k, centered.square().sum(-1, keepdim=True)
            spread = (centered_err * centered.abs()).sum(-1, keepdim=True)
        else:  # mean_batch_std: one std over every valid reward of the batch (centered per group)
            count, squares = valid.sum().double(), centered.square().sum()
            spread = (centered_err * centered.abs()).sum()
        std = (squares / (count - 1).clamp(min=1)).sqrt()
        rel_std = (_sum_error(count) + 4 * U32) / 2 + spread / squares.clamp(min=1e-300) + 2 * U32
        denominator = std + eps
        bound = centered_err / denominator + (rel_std * std / denominator + 2 * U32) * (centered / denominator).abs()
    return torch.where(valid, bound.expand_as(r), 0.0)


def _rows(t: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if t is None:
        return None
    t = t.detach().double().cpu()
    return (t[:, None] if t.dim() == 1 else t).expand(shape)


def policy_loss_bounds(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, ref_logprobs: torch.Tensor | None = None,
                       token_weights: torch.Tensor | None = None, step: float = 1e-6,
                       **options: Any) -> dict[str, torch.Tensor]:
    """Bounds on the loss [], per_token_loss [B, T], the metrics [] and the gradient [B, T] (against central
    differences of step `step`), for the plain-math reference's options."""
    shape = logprobs.shape
    m = _rows(mask, shape).to(torch.float64)
    on = m != 0
    lp = torch.where(on, _rows(logprobs, shape), 0.0)
    old = torch.where(on, _rows(old_logprobs, shape), 0.0)
    a = torch.where(on, _rows(advantages, shape), 0.0).abs()
    w = torch.where(on, _rows(token_weights, shape), 0.0).abs() if token_weights is not None else torch.ones(shape)
    delta = lp - old
    tokens = m.sum(-1, keepdim=True)  # [B, 1] mask weight per sequence
    if options.get("ratio_level", "token") == "sequence":
        seq_log = (m * delta).sum(-1, keepdim=True) / tokens.clamp(min=1e-300)
        seq_err = _sum_error(on.sum(-1, keepdim=True).double()) * (m * delta.abs()).sum(-1, keepdim=True) / (
            tokens.clamp(min=1e-300))
        ratio = seq_log.exp().expand(shape)
        rel_r = seq_err + (seq_log.abs() + 8) * U32
    else:
        ratio = delta.exp()
        rel_r = (delta.abs() + 6) * U32
    hi = 1.0 + options.get("clip_high", 0.2)
    dual = options.get("dual_clip")
    policy = a * w * torch.maximum(ratio, torch.full_like(ratio, hi))
    if dual is not None:
        policy = torch.maximum(policy, dual * a * w)
    kl_coef = options.get("kl_coef", 0.0)
    kl_mag = kl_grad = torch.zeros(shape, dtype=torch.float64)
    if ref_logprobs is not None:  # the KL metric is reported whatever kl_coef
        x = torch.where(on, _rows(ref_logprobs, shape), 0.0) - lp
        kl_mag, kl_grad = {"k1": (x.abs(), torch.ones(shape)), "k2": (x.square(), x.abs()),
                           "k3": (x.exp() + x.abs() + 1, x.exp() + 1)}[options.get("kl_type", "k3")]
    magnitude = m.abs() * (policy + kl_coef * kl_mag)
    per_token = m.abs() * (policy * (rel_r + 4 * U32) + kl_coef * kl_mag * 6 * U32)
    nonempty = (tokens > 0).double()
    sequences = nonempty.sum().clamp(min=1)
    agg = options.get("loss_agg", "token_mean")
    scale = {"token_mean": torch.ones_like(tokens) / tokens.sum().clamp(min=1e-300),
             "seq_mean_token_mean": nonempty / (tokens.clamp(min=1e-300) * sequences),
             "seq_mean_token_sum": nonempty / sequences,
             "seq_mean_token_sum_norm": nonempty / (sequences * options.get("max_tokens", 1))}[agg]  # [B, 1]
    count = on.sum().double()
    loss_mag = (scale * magnitude).sum()
    loss = (scale * per_token).sum() + (_sum_error(count) + 4 * U32) * loss_mag
    total = tokens.sum().clamp(min=1e-300)
    metric = {
        "ratio_mean": ((m * ratio * (rel_r + 2 * U32)).sum() + _sum_error(count) * (m * ratio).sum()) / total,
        "ratio_max": (torch.where(on, ratio * (rel_r + 2 * U32), 0.0)).max() if count else torch.zeros(()),
        "kl_mean": ((m.abs() * kl_mag * 6 * U32).sum() + _sum_error(count) * (m.abs() * kl_mag).sum()) / total,
        "clip_fraction": torch.tensor(2 * U32),  # a count over the mask weight: its division (and a float mask's sum)
    }
    grad_mag = scale * m.abs() * (a * w * ratio + kl_coef * kl_grad)
    if options.get("ratio_level", "token") == "sequence":  # d s_b / d lp_t = s_b m_t / W_b: every token's term
        grad_mag = grad_mag + scale * m.abs() / tokens.clamp(min=1e-300) * (m.abs() * a * w * ratio).sum(-1, True)
    fd = 4 * torch.finfo(torch.float64).eps * (loss_mag + 1) / step  # the reference's own rounding
    grad = grad_mag * (rel_r + 8 * U32) + fd
    return {"loss": loss, "per_token_loss": per_token + U32 * magnitude, "grad": grad, **metric}


def policy_loss_bound(which: str, **inputs: Any) -> torch.Tensor:
    return policy_loss_bounds(**inputs)[which]
