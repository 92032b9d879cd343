"""One generated sample (`Sequence`) and one request (`SequenceGroup`, the n samples of one prompt).

A group starts with a single sequence, the parent, which prefills the prompt. When that prefill completes, the engine
samples n first tokens from the prompt's last-position logits and the scheduler forks the group: the n - 1 children
share the parent's KV blocks (copy-on-write), so the prompt is computed once whatever n is.

`ScheduledSeq` and `SchedulerOutput` are the scheduler's view of one step: which sequences run, at which positions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # holds no KV blocks; needs a (re-)prefill of all its tokens
    RUNNING = "running"  # holds KV blocks: being prefilled in chunks, or decoding
    FINISHED = "finished"  # done (stop, length, abort); its blocks are released


@dataclass(eq=False)
class Sequence:
    """Token ids (prompt then output) and KV bookkeeping of one sample.

    `num_computed_tokens` counts the tokens at the start of `token_ids` whose KV is in the cache. A decoding sequence
    has exactly one token more than that: the last sampled token, whose KV the next decode step computes.
    """

    seq_id: int
    request_id: str
    sample_index: int  # which of the request's n samples
    token_ids: list[int]
    num_prompt_tokens: int
    arrival: int  # arrival order of the request (scheduler counter); with sample_index it orders "youngest"
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    sampling: Any = None  # the engine's per-sample parameters; opaque to the scheduler
    seed: int | None = None  # the request's seed (the engine derives the sample's own from it and sample_index)
    finish_reason: str | None = None
    num_cached_tokens: int = 0  # tokens served by the prefix cache at the sequence's latest admission
    num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def num_pending_tokens(self) -> int:
        """Tokens whose KV is not in the cache yet."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def priority(self) -> tuple[int, int]:
        """Smaller is older; the scheduler preempts the largest (youngest) first."""
        return (self.arrival, self.sample_index)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        if self.status is SequenceStatus.FINISHED:
            raise RuntimeError(f"Sequence {self.seq_id} (request {self.request_id!r}) is finished; cannot append")
        self.token_ids.append(int(token_id))


class SequenceGroup:
    """The n samples of one prompt. Before its prompt is prefilled, only the parent (sample 0) exists."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Iterable[int],
        n: int = 1,
        sampling: Any = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(request_id, str):
            raise TypeError(f"SequenceGroup.request_id must be a str, got {type(request_id).__name__}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"SequenceGroup.n (samples per prompt) must be an int >= 1, got {n!r}")
        self.request_id = request_id
        self.prompt_token_ids = [int(t) for t in prompt_token_ids]
        self.n = n
        self.sampling = sampling
        self.seed = seed
        self.seqs: list[Sequence] = []  # sample order; filled by Scheduler.add and Scheduler.fork_group
        self.arrival = -1  # set by Scheduler.add
        self.forked = False  # True once the n samples exist (after the prompt's prefill)
        self.error: str | None = None  # why the request failed (set by the scheduler); None when it did not

    @property
    def parent(self) -> Sequence:
        if not self.seqs:
            raise RuntimeError(f"request {self.request_id!r} has no sequences yet: add it to a Scheduler first")
        return self.seqs[0]

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def is_finished(self) -> bool:
        return self.failed or (bool(self.seqs) and all(s.is_finished for s in self.seqs))

    def __repr__(self) -> str:
        return (
            f"SequenceGroup(request_id={self.request_id!r}, n={self.n}, prompt_len={len(self.prompt_token_ids)}, "
            f"forked={self.forked}, seqs={[s.seq_id for s in self.seqs]}, error={self.error!r})"
        )


@dataclass(frozen=True)
class ScheduledSeq:
    """One sequence's share of a step: its tokens at positions [start, start + num_new_tokens)."""

    seq: Sequence
    start: int  # tokens already in the cache (cached prefix + earlier chunks); the first new token's position
    num_new_tokens: int  # prefill chunk size; 1 for decode
    # The last new token's logits give this sequence's next token: the end of a prefill (prompt, or the whole
    # context of a preempted sequence being recomputed) or a decode. False for a prefill chunk that is not the last.
    sample: bool
    # First tokens of a fresh request: sample group.n tokens from this row and call Scheduler.fork_group(group).
    fork: bool
    group: SequenceGroup | None = None  # set when fork

    @property
    def context_len(self) -> int:
        """Tokens of the sequence in the cache after this step."""
        return self.start + self.num_new_tokens

    @property
    def positions(self) -> range:
        return range(self.start, self.start + self.num_new_tokens)

    @property
    def token_ids(self) -> list[int]:
        """The tokens this step feeds to the model."""
        return self.seq.token_ids[self.start : self.start + self.num_new_tokens]

    @property
    def block_table(self) -> list[int]:
        return self.seq.block_table


@dataclass
class SchedulerOutput:
    """One step: all-prefill or all-decode."""

    is_prefill: bool
    scheduled: list[ScheduledSeq]  # sequences in batch order
    cow_pairs: list[tuple[int, int]]  # (src, dst) blocks to copy in every layer, in order, before the forward
    preempted: list[Sequence] = field(default_factory=list)  # sent back to waiting by this step (for metrics)
    failed: list[SequenceGroup] = field(default_factory=list)  # requests that can never run; see group.error

    @property
    def num_batched_tokens(self) -> int:
        return sum(item.num_new_tokens for item in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled
