"""Error bounds derived from the computation, for tests that must hold on every machine (AVX2, AVX-512/AMX, GPU).

A kernel's result differs from the fp64 reference by the rounding of its own arithmetic, and the summation order
of that arithmetic differs between machines: oneDNN/MKL pick AVX-512 or AMX code paths whatever ATen's dispatch is
told, GPUs split reductions across threads. A fixed `atol` measured on one machine therefore fails on another. The
bound here follows the computation instead:

- A sum of K products a_k * b_k accumulated in a format of unit roundoff u has, with overwhelming probability
  (rounding errors modelled as independent and mean zero; Higham & Mary, "A new approach to probabilistic rounding
  error analysis", 2019), |error| <= LAMBDA * sqrt(K) * u * sum_k |a_k| |b_k|. LAMBDA = 8 makes the chance that one
  element exceeds it below 2 * exp(-LAMBDA^2 / 2) ~ 3e-14, whatever the order (blocked, tree or sequential).
- An operand that carries its own relative error e_k (it was computed) adds sum_k e_k |a_k| |b_k|.
- Rounding the result into the output format adds u_out * |result| (`rounding`: of the computed result, and at
  least half the format's smallest subnormal).

`assert_within_bound` names the worst element and its error-to-bound ratio when the check fails.
"""

from __future__ import annotations

import math

import torch

LAMBDA = 8.0  # see the module docstring: the per-element failure probability is ~3e-14


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of one rounding to nearest (2**-24 for fp32, 2**-9 for bf16)."""
    return torch.finfo(dtype).eps / 2


def rounding(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Largest error of rounding `value` into `dtype`: u |value|, or half the smallest subnormal where that is more
    (fp16 keeps gradients of 1e-8 only as subnormals 6e-8 apart)."""
    info = torch.finfo(dtype)
    return unit_roundoff(dtype) * value.abs() + info.tiny * info.eps / 2


def matmul_bound(
    a: torch.Tensor,
    b: torch.Tensor,
    expected: torch.Tensor,
    accumulate: torch.dtype = torch.float32,
    output: torch.dtype = torch.float32,
    a_relative_error: torch.Tensor | None = None,
) -> torch.Tensor:
    """Element-wise bound on |computed(a @ b) - expected| for a [M, K] @ [K, N] product accumulated in `accumulate`
    and rounded into `output`; `a` holds the magnitudes of what is summed (|a| is taken). `a_relative_error`
    ([M, 1] or [1, K]): the relative error that a computed `a` carries, as a fraction (already times u)."""
    a_abs, b_abs = a.double().abs(), b.double().abs()
    length = a.shape[-1]
    bound = LAMBDA * math.sqrt(length) * unit_roundoff(accumulate) * (a_abs @ b_abs)
    if a_relative_error is not None:
        bound = bound + (a_relative_error.double() * a_abs) @ b_abs
    return bound + rounding(expected.double().abs() + bound, output)  # the result, at most `bound` off, rounded


def assert_within_bound(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str) -> float:
    """|actual - expected| <= bound element-wise; returns the largest error / bound ratio (<= 1 when it passes)."""
    assert actual.shape == expected.shape == bound.shape, (what, actual.shape, expected.shape, bound.shape)
    if actual.numel() == 0:
        return 0.0
    error = (actual.detach().double().cpu() - expected.detach().double().cpu()).abs()
    bound = bound.cpu()
    ratio = error / bound.clamp_min(torch.finfo(torch.float64).tiny)
    worst = int(ratio.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))
    failing = int((error > bound).sum())
    assert failing == 0, (
        f"{what}: {failing} of {error.numel()} elements exceed the derived bound; worst at {index}: error "
        f"{error.flatten()[worst].item():.3g} vs bound {bound.flatten()[worst].item():.3g} "
        f"(ratio {ratio.flatten()[worst].item():.2f}, expected {expected.flatten()[worst].item():.4g})"
    )
    return ratio.max().item()


def linear_logprobs_grad_bounds(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    g_logprobs: torch.Tensor | None,
    g_entropy: torch.Tensor | None,
    output: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp64 reference gradients of sum(g_lp * logprobs) + sum(g_ent * entropy) of log_softmax(hidden @ weight.T / T)
    and their bounds: (grad_hidden, bound_hidden, grad_weight, bound_weight).

    With G = d loss / d(hidden @ weight.T) [N, V]: grad_hidden = G @ weight (K = V), grad_weight = G.T @ hidden
    (K = N), both accumulated in fp32 and rounded into `output`. G is a sum of terms that a kernel adds separately and
    that cancel (the log-prob's onehot - p makes w_target - E_p[w], near zero when p_target ~ 1), so the magnitudes
    summed are those of the terms: |g_lp| (onehot + p) / T + |g_ent| p (|log p| + H) / T. The kernel recomputes G
    from its own fp32 logits: row n's logits carry an absolute error up to min(H, LAMBDA sqrt(H)) u Z_n, with
    Z_n = max_v sum_h |h_nh| |w_vh| / T, which p = exp(z - lse) doubles and the entropy gradient's log p term doubles
    again; 16 more roundings cover exp, log and the divisions. That is G's relative error per row."""
    h64, w64 = hidden.detach().double().cpu(), weight.detach().double().cpu()
    logits = (h64 @ w64.T).requires_grad_()  # [N, V]
    logp = torch.log_softmax(logits / temperature, dim=-1)
    p = logp.exp()
    entropy = -(p * logp).sum(-1, keepdim=True)  # [N, 1]
    onehot = torch.zeros_like(p).scatter_(-1, targets.cpu()[:, None], 1.0)
    loss = torch.zeros((), dtype=torch.float64)
    magnitude = torch.zeros_like(p)  # [N, V] the terms of G in absolute value
    if g_logprobs is not None:
        g = g_logprobs.double().cpu()[:, None]
        loss = loss + (g * logp * onehot).sum()
        magnitude = magnitude + g.abs() * (onehot + p) / temperature
    if g_entropy is not None:
        g = g_entropy.double().cpu()[:, None]
        loss = loss + (g * entropy).sum()
        magnitude = magnitude + g.abs() * p.detach() * (logp.detach().abs() + entropy.detach()) / temperature
    loss.backward()
    grad_logits = logits.grad  # [N, V]
    width = hidden.shape[-1]
    z = (h64.abs() @ w64.abs().T).amax(dim=-1, keepdim=True) / temperature  # [N, 1]
    logit_units = min(width, LAMBDA * math.sqrt(width))
    relative = unit_roundoff(torch.float32) * (4.0 * logit_units * z + 16.0)  # [N, 1]
    grad_hidden = grad_logits @ w64
    grad_weight = grad_logits.T @ h64
    bound_hidden = matmul_bound(magnitude, w64, grad_hidden, output=output, a_relative_error=relative)
    bound_weight = matmul_bound(magnitude.T, h64, grad_weight, output=output, a_relative_error=relative.T)
    return grad_hidden, bound_hidden, grad_weight, bound_weight
