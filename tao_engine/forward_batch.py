"""The explicit description of one forward pass, built by its caller and handed down to every layer.

Tokens are packed: the batch is one ragged sequence of `num_tokens` tokens ([num_tokens, hidden]), never padded.
Sequence `i` owns query tokens `cu_seqlens_q[i]:cu_seqlens_q[i+1]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ForwardBatch:
    positions: torch.Tensor  # [num_tokens] int64, position of each token inside its sequence
    cu_seqlens_q: torch.Tensor  # [num_seqs + 1] int32, prefix sums of query lengths
    max_seqlen_q: int
    is_prefill: bool = True
    # Paged KV cache (filled by the engine; None for a plain full-sequence forward without cache).
    slot_mapping: torch.Tensor | None = None  # [num_tokens] int64, flat cache slot of each new token
    block_tables: torch.Tensor | None = None  # [num_seqs, max_blocks] int32
    context_lens: torch.Tensor | None = None  # [num_seqs] int32, tokens in cache after this step (incl. new)
    cu_seqlens_k: torch.Tensor | None = None  # [num_seqs + 1] int32, prefix sums of context_lens
    max_seqlen_k: int = 0
    # Prefill with a cache only: True when some sequence already has tokens in the cache before this step (chunked
    # prefill, prefix cache), so attention must read the cache through block_tables. False lets attention use the
    # fresh k/v alone. The caller sets it from its own bookkeeping, so nothing is read back from the device.
    has_cached_prefix: bool = False

    def __post_init__(self) -> None:
        if self.positions.dim() != 1:
            shape = tuple(self.positions.shape)
            raise ValueError(f"ForwardBatch.positions must be 1-D [num_tokens], got shape {shape}")
        if self.cu_seqlens_q.dim() != 1 or self.cu_seqlens_q.numel() < 2:
            raise ValueError("ForwardBatch.cu_seqlens_q must be 1-D with num_seqs + 1 >= 2 entries")

    @property
    def num_seqs(self) -> int:
        return self.cu_seqlens_q.numel() - 1

    @property
    def num_tokens(self) -> int:
        return self.positions.numel()

    @classmethod
    def for_sequences(cls, lengths: list[int], device: torch.device | str = "cpu") -> ForwardBatch:
        """A cache-free prefill over packed sequences of the given lengths, positions starting at 0."""
        if not lengths or any(n <= 0 for n in lengths):
            raise ValueError(f"ForwardBatch.for_sequences: lengths must be positive, got {lengths}")
        lens = torch.tensor(lengths, dtype=torch.int32)
        cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        torch.cumsum(lens, 0, out=cu[1:])
        positions = torch.cat([torch.arange(n, dtype=torch.int64) for n in lengths])
        return cls(positions=positions.to(device), cu_seqlens_q=cu.to(device), max_seqlen_q=max(lengths))
