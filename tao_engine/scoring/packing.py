"""Token-budget batching for the model-based scorers: packed (never padded) cache-free forwards over many sequences."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tao_engine.forward_batch import ForwardBatch


def token_budget_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split sequence indices into consecutive batches of at most `max_tokens` tokens in all; a sequence longer than
    the budget gets a batch of its own. Order is kept, so outputs map back without sorting."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"token_budget_batches: max_tokens must be an int >= 1, got {max_tokens!r}")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        if current and used + n > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        batches.append(current)
    return batches


def packed_batch(
    sequences: Sequence[Sequence[int]], device: torch.device | str
) -> tuple[torch.Tensor, ForwardBatch, list[int]]:
    """(packed ids [N] int64, a cache-free prefill ForwardBatch, the start offset of each sequence)."""
    lengths = [len(s) for s in sequences]
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    flat = [int(t) for s in sequences for t in s]
    ids = torch.tensor(flat, dtype=torch.int64, device=device)
    return ids, ForwardBatch.for_sequences(lengths, device=device), starts
