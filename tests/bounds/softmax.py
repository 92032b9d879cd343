"""Error bounds of the log-softmax family (token and linear log-probs, entropy, the sampler's log-probs) against
the fp64 value, derived from what the kernels compute (tests/error_bounds.py states the model: LAMBDA sqrt(K) u).

Per row of z = x / T (V columns, A = max |z|, m = max z, s = sum exp(z - m), lse = m + log s), in fp32 (u):
- each z_i carries u A (the division), each exponent d_i = z_i - m at most 4 u A (z_i, m and the subtraction; the
  fold into exp2's base adds 3 u A), exp itself 4 u (libm, SLEEF and a GPU's ex2.approx are within 2 ulp): each
  term of s has the relative error r = (7 A + 4) u;
- s adds V positive terms: LAMBDA sqrt(V) u s, and an online softmax rescales the partial sum whenever the running
  max grows, each rescale one more relative error r. A tile raises the running max only at an element larger than
  every element before it (the tile's max is larger than all earlier tiles and the rest of its own), so whatever the
  tiling there are at most R rescales, R the row's count of such prefix records (about ln V on random rows):
  rel_s = LAMBDA sqrt(V) u + r (1 + R);
- lse then carries u A (m) + rel_s + 4 u (log) + u |lse| (the addition), and a log-prob z_t - lse one more u A and
  two roundings of |log p| (the subtraction and the output).
When the logits are computed (linear_logprobs), their own error per column, `logit_error` (in logits' units), adds:
the target's and, through lse, at most the row's largest (lse is 1-Lipschitz in the max norm). The entropy
H = log s - U / s (U = sum e_i (m - z_i)) moves by at most 2 H max(logit error / T) (sum_i p_i |log p_i + H| <= 2 H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tests.error_bounds import LAMBDA, rounding, unit_roundoff


@dataclass(frozen=True)
class SoftmaxRows:
    """fp64 quantities of each row and the error budget of its normalizer, in fp32 arithmetic."""

    z: torch.Tensor  # [N, V] logits / T
    logp: torch.Tensor  # [N, V]
    lse: torch.Tensor  # [N, 1]
    amax: torch.Tensor  # [N, 1] max |z|
    rel_sum: torch.Tensor  # [N, 1] relative error of s
    lse_error: torch.Tensor  # [N, 1] absolute error of lse
    z_error: torch.Tensor  # [N, V] absolute error of each z (rounding of the division, plus computed logits)


def prefix_records(z: torch.Tensor) -> torch.Tensor:
    """[N, 1]: how many elements of each row exceed every element before them (the first one not counted)."""
    earlier = torch.cummax(z, dim=-1).values[..., :-1]
    return (z[..., 1:] > earlier).sum(-1, keepdim=True).double()


def softmax_rows(logits: torch.Tensor, temperature: float, logit_error: torch.Tensor | None = None) -> SoftmaxRows:
    """`logits` [N, V] as the kernel reads them (any dtype: upcast exactly; -inf for masked columns, which take no
    part); `logit_error` [N, V] the absolute error of computed logits, before the division by T."""
    u = unit_roundoff(torch.float32)
    z = logits.detach().double().cpu() / temperature
    finite = torch.isfinite(z)
    count = finite.sum(-1, keepdim=True).clamp(min=1).double()  # [N, 1] the columns that are summed
    amax = torch.where(finite, z.abs(), 0.0).amax(-1, keepdim=True)
    logp = torch.log_softmax(z, dim=-1)
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    per_term = (7 * amax + 4) * u
    rel_sum = LAMBDA * count.sqrt() * u + per_term * (1 + prefix_records(z))
    z_error = torch.where(finite, u * z.abs(), 0.0)
    if logit_error is not None:
        z_error = z_error + torch.where(finite, logit_error.double().cpu() / temperature, 0.0)
    lse_error = u * amax + rel_sum + 4 * u + u * lse.abs() + z_error.amax(-1, keepdim=True)
    return SoftmaxRows(z, logp, lse, amax, rel_sum, lse_error, z_error)


def logprob_bound(rows: SoftmaxRows, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p at `targets` [N] in fp64, its bound [N])."""
    u = unit_roundoff(torch.float32)
    t = targets.cpu().long()[:, None]
    logp_t = rows.logp.gather(-1, t)
    bound = rows.lse_error + rows.z_error.gather(-1, t) + u * rows.amax + 2 * u * logp_t.abs()
    return logp_t.squeeze(-1), bound.squeeze(-1)


def entropy_bound(rows: SoftmaxRows) -> tuple[torch.Tensor, torch.Tensor]:
    """(entropy [N] in fp64, its bound [N]): log s and U / s = E_p[m - z] each carry rel_sum (U's terms the same r,
    plus 4 u A on each exponent), the computed logits 2 H max error, and two roundings of H."""
    u = unit_roundoff(torch.float32)
    p = rows.logp.exp()
    entropy = -(p * rows.logp).sum(-1, keepdim=True)
    log_sum = rows.lse - rows.z.amax(-1, keepdim=True)
    mean_gap = (p * (rows.z.amax(-1, keepdim=True) - rows.z)).sum(-1, keepdim=True)  # U / s
    computed = (rows.z_error - u * rows.z.abs()).amax(-1, keepdim=True)  # the logits' own error, over T
    bound = (rows.rel_sum + 4 * u + u * log_sum + mean_gap * (2 * rows.rel_sum + 2 * u) + 4 * u * rows.amax
             + 2 * entropy * computed + 2 * u * entropy)
    return entropy.squeeze(-1), bound.squeeze(-1)


def logprob_grad_bound(rows: SoftmaxRows, targets: torch.Tensor, upstream: torch.Tensor, temperature: float,
                       output: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """d(sum g * log p[target]) / d logits [N, V] in fp64 and its bound: g (onehot - p) / T with p = exp(z - lse)
    carrying the exponent's error (z's and lse's) and 4 u, the product and the division two roundings, then one
    rounding into `output`."""
    u = unit_roundoff(torch.float32)
    p = rows.logp.exp()
    onehot = torch.zeros_like(p).scatter_(-1, targets.cpu().long()[:, None], 1.0)
    g = upstream.detach().double().cpu()[:, None] / temperature
    grad = g * (onehot - p)
    p_error = p * (rows.z_error + rows.lse_error + 4 * u + u * (rows.z - rows.lse).abs())
    bound = g.abs() * (p_error + 3 * u * (onehot - p).abs())
    return grad, bound + rounding(grad.abs() + bound, output)  # the fp32 result, at most `bound` off, rounded


def token_logprobs_bound(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                         implementations: int = 1) -> torch.Tensor:
    """Bound on log_softmax(logits / T)[target] for logits [..., V] and targets [...], shaped like targets; times
    `implementations` when two fp32 computations are compared."""
    rows = softmax_rows(logits.reshape(-1, logits.shape[-1]), temperature)
    return implementations * logprob_bound(rows, targets.reshape(-1))[1].view(targets.shape)
