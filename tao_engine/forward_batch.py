"""The explicit description of one forward pass, built by its caller and handed down to every layer.

Tokens are packed: the batch is one ragged sequence of `num_tokens` tokens ([num_tokens, hidden]), never padded.
Sequence `i` owns query tokens `cu_seqlens_q[i]:cu_seqlens_q[i+1]`.

Shared-prompt layout (`for_shared_prompts`, training only): the tokens form groups [prompt][completion 1]...
[completion n], each prompt and each completion one sequence. A completion attends to all of its group's prompt and
causally to itself, never to its sibling completions; its positions continue the prompt's (len(prompt) + j). The
prompt is thus forwarded once for its n completions, and their gradients all flow back through that one forward.
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
    # Shared-prompt layout only (see the module docstring): for each sequence, the index of the prompt sequence it
    # attends to before its own tokens; a prompt names itself. None: every sequence attends to itself alone.
    prompt_seq: torch.Tensor | None = None  # [num_seqs] int32

    def __post_init__(self) -> None:
        if self.positions.dim() != 1:
            shape = tuple(self.positions.shape)
            raise ValueError(f"ForwardBatch.positions must be 1-D [num_tokens], got shape {shape}")
        if self.cu_seqlens_q.dim() != 1 or self.cu_seqlens_q.numel() < 2:
            raise ValueError("ForwardBatch.cu_seqlens_q must be 1-D with num_seqs + 1 >= 2 entries")
        if self.prompt_seq is not None:
            if self.prompt_seq.dim() != 1 or self.prompt_seq.numel() != self.num_seqs:
                raise ValueError(
                    f"ForwardBatch.prompt_seq must be 1-D with one entry per sequence ({self.num_seqs}), got shape "
                    f"{tuple(self.prompt_seq.shape)}"
                )
            if not self.is_prefill or self.slot_mapping is not None or self.block_tables is not None:
                raise ValueError(
                    "ForwardBatch.prompt_seq (shared-prompt layout) is for cache-free full forwards: it needs "
                    "is_prefill=True and no slot_mapping or block_tables"
                )

    @property
    def has_shared_prompts(self) -> bool:
        return self.prompt_seq is not None

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

    @classmethod
    def for_shared_prompts(
        cls, prompt_lens: list[int], completion_lens: list[list[int]], device: torch.device | str = "cpu"
    ) -> ForwardBatch:
        """A cache-free forward over groups [prompt g][completions of g...] packed in that order (the tokens must be
        laid out the same way). Completion j of a group has positions len(prompt) .. len(prompt) + len - 1."""
        if len(prompt_lens) != len(completion_lens) or not prompt_lens:
            raise ValueError(
                f"ForwardBatch.for_shared_prompts: give one list of completion lengths per prompt, got "
                f"{len(prompt_lens)} prompts and {len(completion_lens)} lists"
            )
        seq_lens: list[int] = []
        prompt_seq: list[int] = []
        positions: list[torch.Tensor] = []
        for g, (p, comps) in enumerate(zip(prompt_lens, completion_lens, strict=True)):
            if p <= 0 or not comps or any(c <= 0 for c in comps):
                raise ValueError(
                    f"ForwardBatch.for_shared_prompts: group {g} needs a positive prompt length and at least one "
                    f"completion, all of positive length; got prompt {p}, completions {comps}"
                )
            prompt_index = len(seq_lens)
            seq_lens += [p, *comps]
            prompt_seq += [prompt_index] * (1 + len(comps))
            positions.append(torch.arange(p, dtype=torch.int64))
            positions += [torch.arange(p, p + c, dtype=torch.int64) for c in comps]
        cu = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
        torch.cumsum(torch.tensor(seq_lens, dtype=torch.int32), 0, out=cu[1:])
        return cls(
            positions=torch.cat(positions).to(device),
            cu_seqlens_q=cu.to(device),
            max_seqlen_q=max(seq_lens),
            prompt_seq=torch.tensor(prompt_seq, dtype=torch.int32, device=device),
        )
