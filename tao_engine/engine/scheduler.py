"""Continuous batching: which sequences run in the next forward, and how many of their tokens.

A step is prefill-only or decode-only (as in nano-vllm). Prefill goes first whenever some prompt (or preempted
sequence) can make progress within the token budget and the free KV blocks; otherwise the running sequences decode
one token each. Long prompts are prefilled in chunks of whatever fits `max_num_batched_tokens`.

Priority is arrival order: the oldest request goes first and the youngest sequence (latest arrival, then highest
sample index) is preempted first. Preemption is by recompute: the victim's blocks are released, its tokens (prompt
and output so far) are kept, and it goes back to the waiting queue to be prefilled again; with prefix caching most of
its blocks are found again in the cache. The oldest sequence can always make progress (a single sequence always fits,
as requests that could not are failed at `add`), so the scheduler cannot deadlock.

Engine protocol for one step: `schedule()` -> copy `cow_pairs` and run the forward -> `on_step_done(out)` ->
for each item with `fork`: `fork_group(item.group)` and append one sampled token to each returned sequence; for each
item with `sample`: append one sampled token to `item.seq` -> `finish(seq, reason)` for sequences that stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tao_engine.config_checks import check_positive_ints
from tao_engine.config_dict import dataclass_from_dict
from tao_engine.engine.block_manager import BlockManager
from tao_engine.engine.sequence import ScheduledSeq, SchedulerOutput, Sequence, SequenceGroup, SequenceStatus


@dataclass
class SchedulerConfig:
    max_model_len: int  # longest sequence (prompt + output) the model runs on
    max_num_seqs: int = 64  # sequences holding KV at once (a group not yet forked counts as its n)
    max_num_batched_tokens: int = 2048  # tokens in one forward
    enable_chunked_prefill: bool = True  # split prompts longer than the token budget over several steps
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        check_positive_ints(self, ("max_model_len", "max_num_seqs", "max_num_batched_tokens"))
        for name in ("enable_chunked_prefill", "enable_prefix_caching"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SchedulerConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"SchedulerConfig: without chunked prefill a whole sequence must fit one step, but "
                f"max_num_batched_tokens={self.max_num_batched_tokens} < max_model_len={self.max_model_len}; "
                "raise max_num_batched_tokens or set enable_chunked_prefill=true"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SchedulerConfig:
        return dataclass_from_dict(cls, d)


@dataclass
class _Step:
    """Working state of one schedule() call."""

    token_budget: int
    items: list[ScheduledSeq] = field(default_factory=list)
    cow_pairs: list[tuple[int, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    scheduled_ids: set[int] = field(default_factory=set)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        if config.enable_prefix_caching != block_manager.enable_prefix_caching:
            raise ValueError(
                f"Scheduler: SchedulerConfig.enable_prefix_caching={config.enable_prefix_caching} but the block "
                f"manager was built with enable_prefix_caching={block_manager.enable_prefix_caching}; build both "
                "from the same setting"
            )
        self.config = config
        self.block_manager = block_manager
        # Sequences never hold KV beyond the model's context or the whole cache.
        self.max_seq_len = min(config.max_model_len, block_manager.num_blocks * block_manager.block_size)
        self.waiting: list[Sequence] = []  # sorted by priority (oldest first); no KV blocks held
        self.running: list[Sequence] = []  # hold KV blocks: prefilling in chunks or decoding
        self.groups: dict[str, SequenceGroup] = {}  # unfinished requests by id
        self.num_preemptions = 0
        self._failed: list[SequenceGroup] = []  # to report in the next output
        self._next_arrival = 0
        self._next_seq_id = 0
        self._in_flight: SchedulerOutput | None = None

    # ---- requests -------------------------------------------------------------------------------------------------

    def add(self, group: SequenceGroup) -> SequenceGroup:
        """Queue a request. One that can never run is marked failed (`group.error`) and reported in the next output."""
        if group.seqs:
            raise ValueError(f"Scheduler.add: request {group.request_id!r} was already added")
        if group.request_id in self.groups:
            raise ValueError(f"Scheduler.add: request id {group.request_id!r} is already in use")
        group.arrival = self._next_arrival
        self._next_arrival += 1
        prompt_len = len(group.prompt_token_ids)
        parent = self._new_seq(group, 0)
        group.seqs.append(parent)
        group.error = self._why_unservable(group, prompt_len)
        if group.error is not None:
            parent.status = SequenceStatus.FINISHED
            parent.finish_reason = "abort"
            self._failed.append(group)
            return group
        self.groups[group.request_id] = group
        self.waiting.append(parent)  # arrivals only grow, so the queue stays sorted
        return group

    def _why_unservable(self, group: SequenceGroup, prompt_len: int) -> str | None:
        bm, cfg = self.block_manager, self.config
        rid = group.request_id
        if prompt_len == 0:
            return f"request {rid!r}: the prompt is empty; give at least one token"
        if prompt_len > cfg.max_model_len:
            return (
                f"request {rid!r}: the prompt has {prompt_len} tokens, more than max_model_len={cfg.max_model_len}; "
                "shorten the prompt or raise max_model_len"
            )
        blocks = -(-prompt_len // bm.block_size)
        if blocks > bm.num_blocks:
            return (
                f"request {rid!r}: the prompt needs {blocks} KV blocks of {bm.block_size} tokens but the whole cache "
                f"has {bm.num_blocks}; shorten the prompt or give the KV cache more memory"
            )
        if group.n > cfg.max_num_seqs:
            return f"request {rid!r}: n={group.n} samples exceed max_num_seqs={cfg.max_num_seqs}; lower n"
        return None

    def abort(self, request_id: str) -> bool:
        """Finish every sequence of a request (reason 'abort'); False when no such request is unfinished."""
        group = self.groups.get(request_id)
        if group is None:
            return False
        self._check_between_steps("abort")
        for seq in group.seqs:
            if not seq.is_finished:
                self.finish(seq, "abort")
        return True

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self._failed)

    def finish(self, seq: Sequence, reason: str) -> None:
        """The sequence stops (its blocks are released); the request ends when all its samples have."""
        if seq.is_finished:
            raise RuntimeError(f"Scheduler.finish: sequence {seq.seq_id} is already finished ({seq.finish_reason})")
        self._check_between_steps("finish")
        self.block_manager.free(seq)
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        group = self.groups[seq.request_id]
        if group.is_finished:
            del self.groups[seq.request_id]

    def _check_between_steps(self, what: str) -> None:
        # The in-flight step's forward writes into the blocks of its sequences: they must not be released before.
        if self._in_flight is not None:
            raise RuntimeError(f"Scheduler.{what}: a step is in flight; call it after on_step_done(), between steps")

    def reached_length_cap(self, seq: Sequence) -> bool:
        """True when the sequence must stop for length (model context or whole KV cache): finish it 'length'."""
        return seq.num_tokens >= self.max_seq_len

    def fork_group(self, group: SequenceGroup) -> list[Sequence]:
        """After the prompt's prefill: create samples 1..n-1 sharing the parent's blocks. Returns all n, in order."""
        parent = group.parent
        if group.forked:
            raise RuntimeError(f"Scheduler.fork_group: request {group.request_id!r} is already forked")
        if parent.status is not SequenceStatus.RUNNING or parent.num_pending_tokens != 0:
            raise RuntimeError(
                f"Scheduler.fork_group: request {group.request_id!r}'s prompt is not fully prefilled; fork right "
                "after on_step_done() of the step whose output marks it `fork`"
            )
        for i in range(1, group.n):
            child = self._new_seq(group, i)
            self.block_manager.fork(parent, child)
            child.status = SequenceStatus.RUNNING
            group.seqs.append(child)
            self.running.append(child)
        group.forked = True
        return list(group.seqs)

    def _new_seq(self, group: SequenceGroup, sample_index: int) -> Sequence:
        seq = Sequence(
            seq_id=self._next_seq_id,
            request_id=group.request_id,
            sample_index=sample_index,
            token_ids=list(group.prompt_token_ids),
            num_prompt_tokens=len(group.prompt_token_ids),
            arrival=group.arrival,
            sampling=group.sampling,
            seed=group.seed,
        )
        self._next_seq_id += 1
        return seq

    # ---- steps ----------------------------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Pick the next step's work; allocate its blocks. Call `on_step_done` after running it."""
        if self._in_flight is not None:
            raise RuntimeError("Scheduler.schedule: the previous step's on_step_done() was not called")
        for seq in self.running:
            if seq.num_pending_tokens == 0:
                raise RuntimeError(
                    f"Scheduler.schedule: sequence {seq.seq_id} has its whole context computed but no new token; "
                    "append the token sampled for it (or finish it) before the next step"
                )
        failed, self._failed = self._failed, []
        step = _Step(self.config.max_num_batched_tokens)
        self._schedule_prefill(step)
        is_prefill = bool(step.items)
        if not is_prefill:
            self._schedule_decode(step)
        out = SchedulerOutput(is_prefill, step.items, step.cow_pairs, step.preempted, failed)
        if out.scheduled:
            self._in_flight = out
        elif self.waiting or self.running:
            raise RuntimeError(
                f"Scheduler.schedule: no progress possible with {len(self.waiting)} waiting and {len(self.running)} "
                f"running sequences and {self.block_manager.num_free_blocks} free blocks (scheduler bug)"
            )
        return out

    def on_step_done(self, out: SchedulerOutput) -> None:
        """The step's forward ran: its tokens' KV is now in the cache."""
        if out is not self._in_flight:
            raise RuntimeError("Scheduler.on_step_done: not the output of the latest schedule(), or called twice")
        self._in_flight = None
        for item in out.scheduled:
            self.block_manager.mark_computed(item.seq, item.num_new_tokens)

    def abandon_step(self, out: SchedulerOutput) -> list[str]:
        """The step's forward or sampling failed: forget the prefix-cache entries of the blocks it was to fill and
        return the ids of the requests it touched, which the caller must abort (their KV is incomplete)."""
        if out is self._in_flight:
            self._in_flight = None
        touched: list[str] = []
        for item in out.scheduled:
            self.block_manager.forget_uncomputed(item.seq, item.start, item.start + item.num_new_tokens)
            if item.seq.request_id not in touched:
                touched.append(item.seq.request_id)
        return touched

    def _slots_used(self) -> int:
        return sum(1 if self.groups[s.request_id].forked else self.groups[s.request_id].n for s in self.running)

    def _is_decoding(self, seq: Sequence) -> bool:
        return self.groups[seq.request_id].forked and seq.num_pending_tokens == 1

    def _schedule_prefill(self, step: _Step) -> None:
        bm = self.block_manager
        chunked = self.config.enable_chunked_prefill
        # 1. Sequences already holding blocks continue their prefill, oldest first; each may preempt younger ones.
        blocked = False
        for seq in sorted((s for s in self.running if not self._is_decoding(s)), key=lambda s: s.priority):
            if step.token_budget == 0:
                return
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted above by an older sequence
            want = min(seq.num_pending_tokens, step.token_budget)
            if not chunked and want < seq.num_pending_tokens:
                blocked = True
                continue
            # Take what memory allows; preempt younger sequences only when not even one token fits.
            fit = bm.num_tokens_fitting(seq, want)
            while (fit == 0 or (not chunked and fit < want)) and self._preempt_younger(seq, step):
                fit = bm.num_tokens_fitting(seq, want)
            if not chunked and fit < want:
                fit = 0
            if fit == 0:
                blocked = True  # an older prefill waits for memory: admit nobody past it
                continue
            self._add_item(seq, fit, step)
        if blocked or step.preempted:
            return
        # 2. Admit waiting sequences in order while they fit, leaving the blocks the running decodes need next.
        reserve = sum(bm.num_blocks_needed(s, 1) for s in self.running if self._is_decoding(s))
        slots = self._slots_used()
        while self.waiting and step.token_budget > 0:
            seq = self.waiting[0]
            group = self.groups[seq.request_id]
            need_slots = 1 if group.forked else group.n
            if slots + need_slots > self.config.max_num_seqs:
                return
            bm.match_prefix(seq)
            chunk = min(seq.num_pending_tokens, step.token_budget)
            whole_needed = not chunked and chunk < seq.num_pending_tokens
            if whole_needed or bm.num_blocks_needed(seq, chunk) > bm.num_free_blocks - reserve:
                bm.free(seq)  # give the borrowed cached blocks back; retry at a later step
                return
            self.waiting.pop(0)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            slots += need_slots
            self._add_item(seq, chunk, step)

    def _schedule_decode(self, step: _Step) -> None:
        bm = self.block_manager
        max_batch = min(self.config.max_num_seqs, self.config.max_num_batched_tokens)
        for seq in sorted((s for s in self.running if self._is_decoding(s)), key=lambda s: s.priority):
            if len(step.items) >= max_batch:
                return
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted above
            if seq.num_tokens > self.max_seq_len:
                raise RuntimeError(
                    f"Scheduler: sequence {seq.seq_id} has {seq.num_tokens} tokens, past max_seq_len="
                    f"{self.max_seq_len}; finish sequences for which reached_length_cap() is true"
                )
            # Preempt younger sequences one at a time until this one gets its block or none is left to preempt.
            while not bm.can_allocate(seq, 1):
                if not self._preempt_younger(seq, step):
                    break
            if not bm.can_allocate(seq, 1):
                self._preempt(seq, step)  # it is the youngest left: it yields
                continue
            self._add_item(seq, 1, step)

    def _add_item(self, seq: Sequence, num_new_tokens: int, step: _Step) -> None:
        group = self.groups[seq.request_id]
        step.cow_pairs.extend(self.block_manager.allocate(seq, num_new_tokens))
        start = seq.num_computed_tokens
        sample = start + num_new_tokens == seq.num_tokens
        fork = sample and not group.forked
        step.items.append(ScheduledSeq(seq, start, num_new_tokens, sample, fork, group if fork else None))
        step.scheduled_ids.add(seq.seq_id)
        step.token_budget -= num_new_tokens

    def _preempt_younger(self, seq: Sequence, step: _Step) -> bool:
        """Preempt the youngest running sequence younger than `seq` and not scheduled in this step, if any."""
        candidates = [s for s in self.running if s.seq_id not in step.scheduled_ids and s.priority > seq.priority]
        if not candidates:
            return False
        self._preempt(max(candidates, key=lambda s: s.priority), step)
        return True

    def _preempt(self, seq: Sequence, step: _Step) -> None:
        self.block_manager.free(seq)
        self.running.remove(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        # Back to the waiting queue, ahead of every younger request.
        pos = next((i for i, s in enumerate(self.waiting) if s.priority > seq.priority), len(self.waiting))
        self.waiting.insert(pos, seq)
        step.preempted.append(seq)
