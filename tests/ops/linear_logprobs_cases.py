"""Inputs and the fp64 specification shared by tests/ops/test_linear_logprobs.py and
tests/ops/test_linear_logprobs_frozen_weight.py."""

from __future__ import annotations

import torch


def inputs(rows: int, vocab: int, width: int, dtype: torch.dtype, seed: int, device="cpu", scale: float = 3.0):
    """hidden [N, H], weight [V, H] (logits of std ~scale) and targets [N], fresh for each seed."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=gen).to(dtype)
    weight = (torch.randn(vocab, width, generator=gen) * scale / width**0.5).to(dtype)
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    return hidden.to(device), weight.to(device), targets.to(device)


def reference64(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float):
    # The specification in fp64 (linear_logprobs_reference itself computes in fp32): (logprobs, entropy).
    logp = torch.log_softmax(hidden.double() @ weight.double().T / temperature, dim=-1)
    return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)
