"""Scheduler: continuous batching over a fake model that reads its context back from a fake paged KV cache.

The fake model writes each new token id into its slot (through the block table, after the copy-on-write copies, as
the real runner writes K/V), then computes the next token from the context it reads back from the cache: a stable
hash of (request, sample index, context). Any mistake in block tables, copies, prefix reuse or recompute changes the
tokens, so "same tokens with a tiny KV budget as with a huge one" checks the whole bookkeeping end to end.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_engine.engine.block_manager import BlockManager
from tao_engine.engine.scheduler import Scheduler, SchedulerConfig
from tao_engine.engine.sequence import SequenceGroup, SequenceStatus

VOCAB = 41
EOS = 0


@dataclass
class Request:
    request_id: str
    prompt: list[int]
    n: int = 1
    max_tokens: int = 8


@dataclass
class Run:
    outputs: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    steps: int = 0
    prefill_steps: int = 0
    forks: Counter = field(default_factory=Counter)
    cached_tokens: dict[str, int] = field(default_factory=dict)
    max_running: int = 0
    chunked: bool = False  # some prefill step ran part of a sequence's pending tokens
    preemptions: int = 0
    trace: list[tuple[bool, tuple[str, ...]]] = field(default_factory=list)  # (is_prefill, request ids) per step


def next_token(request_id: str, sample_index: int, context: list[int]) -> int:
    key = f"{request_id}|{sample_index}|{','.join(map(str, context))}".encode()
    return zlib.crc32(key) % VOCAB


def make_scheduler(num_blocks: int, block_size: int = 4, prefix_caching: bool = True, **kw) -> Scheduler:
    cfg = SchedulerConfig(**{"max_model_len": 256, "enable_prefix_caching": prefix_caching, **kw})
    return Scheduler(cfg, BlockManager(num_blocks, block_size, enable_prefix_caching=prefix_caching))


def drive(sched: Scheduler, requests: list[Request], max_steps: int = 5000) -> Run:
    """The engine loop of the scheduler's protocol, with the fake model."""
    bm, cfg = sched.block_manager, sched.config
    bs = bm.block_size
    cache: list[list[int | None]] = [[None] * bs for _ in range(bm.num_blocks)]
    limits = {r.request_id: r.max_tokens for r in requests}
    groups = [sched.add(SequenceGroup(r.request_id, r.prompt, n=r.n)) for r in requests]
    run = Run()
    while sched.has_unfinished():
        run.steps += 1
        assert run.steps <= max_steps, "requests did not finish within the step bound"
        out = sched.schedule()
        bm.check_invariants()
        run.preemptions += len(out.preempted)
        for g in out.failed:
            run.errors[g.request_id] = g.error
        if out.is_empty:
            continue
        run.prefill_steps += out.is_prefill
        run.trace.append((out.is_prefill, tuple(item.seq.request_id for item in out.scheduled)))
        assert out.num_batched_tokens <= cfg.max_num_batched_tokens
        assert len(out.scheduled) <= cfg.max_num_seqs
        assert len({item.seq.seq_id for item in out.scheduled}) == len(out.scheduled)
        running = sum(1 if g.forked else g.n for g in sched.groups.values() for s in g.seqs if s in sched.running)
        assert running <= cfg.max_num_seqs
        run.max_running = max(run.max_running, running)
        if not out.is_prefill:
            assert all(item.num_new_tokens == 1 and item.sample and not item.fork for item in out.scheduled)
        # The runner: copies first, then one write per new token, then attention reads the context from the cache.
        for src, dst in out.cow_pairs:
            cache[dst] = list(cache[src])
        for item in out.scheduled:
            assert item.seq.status is SequenceStatus.RUNNING and item.context_len <= item.seq.num_tokens
            run.chunked |= item.context_len < item.seq.num_tokens
            for p, tok in zip(item.positions, item.token_ids, strict=True):
                cache[item.block_table[p // bs]][p % bs] = tok
        contexts = []
        for item in out.scheduled:
            ctx = [cache[item.block_table[p // bs]][p % bs] for p in range(item.context_len)]
            assert ctx == item.seq.token_ids[: item.context_len], "KV read through the block table is wrong"
            contexts.append(ctx)
        sched.on_step_done(out)
        # The sampler and stop checks.
        for item, ctx in zip(out.scheduled, contexts, strict=True):
            if not item.sample:
                continue
            if item.fork:
                run.forks[item.seq.request_id] += 1
                run.cached_tokens[item.seq.request_id] = item.seq.num_cached_tokens
                seqs = sched.fork_group(item.group)
            else:
                seqs = [item.seq]
            for seq in seqs:
                tok = next_token(seq.request_id, seq.sample_index, ctx)
                seq.append_token(tok)
                if tok == EOS:
                    sched.finish(seq, "stop")
                elif seq.num_output_tokens >= limits[seq.request_id] or sched.reached_length_cap(seq):
                    sched.finish(seq, "length")
    bm.check_invariants()
    assert bm.num_free_blocks == bm.num_blocks, "blocks leaked"
    assert not sched.groups and not sched.running and not sched.waiting
    for g in groups:
        if not g.failed:
            assert g.is_finished
            for seq in g.seqs:
                run.outputs[(g.request_id, seq.sample_index)] = seq.output_token_ids
    return run


SYSTEM = [7, 3, 9, 12, 30, 2, 2, 5, 17, 40, 11]  # a shared system prompt of 11 tokens


def workload() -> list[Request]:
    reqs = []
    for i in range(10):
        prompt = SYSTEM + [(i * 7 + j) % VOCAB or 1 for j in range(3 + i % 5)]
        reqs.append(Request(f"r{i}", prompt, n=1 + i % 3, max_tokens=6 + (i * 5) % 11))
    reqs.append(Request("long", [(j * 13) % 39 + 1 for j in range(45)], n=2, max_tokens=12))
    return reqs


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_tiny_kv_budget_preempts_and_gives_the_same_tokens(prefix_caching):
    reference = drive(make_scheduler(num_blocks=1024, prefix_caching=prefix_caching), workload())
    assert reference.preemptions == 0 and not reference.errors
    assert len(reference.outputs) == sum(r.n for r in workload())
    sched = make_scheduler(num_blocks=16, prefix_caching=prefix_caching, max_num_batched_tokens=24)
    tiny = drive(sched, workload())
    assert sched.num_preemptions > 0 and tiny.preemptions == sched.num_preemptions
    assert tiny.outputs == reference.outputs
    assert set(tiny.forks.values()) == {1}  # each request forks exactly once, never again after a recompute


def test_prefix_cache_serves_the_shared_system_prompt():
    sched = make_scheduler(num_blocks=256)
    run = drive(sched, workload())
    # The first request computes the system prompt; the ones admitted after its prefill reuse its 2 full blocks.
    assert run.cached_tokens["r0"] == 0
    assert sum(1 for rid, c in run.cached_tokens.items() if rid != "r0" and c >= 8) >= 8
    assert sched.block_manager.prefix_hits > 0
    plain = drive(make_scheduler(num_blocks=256, prefix_caching=False), workload())
    assert plain.outputs == run.outputs and set(plain.cached_tokens.values()) == {0}


def test_chunked_prefill_respects_the_token_budget():
    sched = make_scheduler(num_blocks=256, max_num_batched_tokens=10)
    run = drive(sched, workload())  # drive asserts num_batched_tokens <= 10 at every step
    assert run.chunked
    assert run.outputs == drive(make_scheduler(num_blocks=256), workload()).outputs


def test_without_chunked_prefill_whole_prompts_run_in_one_step():
    sched = make_scheduler(num_blocks=256, enable_chunked_prefill=False, max_num_batched_tokens=256)
    run = drive(sched, workload())
    assert not run.chunked
    assert run.outputs == drive(make_scheduler(num_blocks=256), workload()).outputs


def test_max_num_seqs_caps_running_sequences():
    sched = make_scheduler(num_blocks=256, max_num_seqs=4)
    run = drive(sched, workload())  # drive asserts the cap at every step
    assert run.max_running == 4
    assert run.outputs == drive(make_scheduler(num_blocks=256), workload()).outputs


def test_unservable_requests_fail_alone():
    sched = make_scheduler(num_blocks=8, block_size=4, max_num_seqs=4)  # cache: 32 tokens; context: 256
    requests = [
        Request("ok1", [1, 2, 3], n=2, max_tokens=5),
        Request("too_long", list(range(1, 258))),  # 257 tokens > max_model_len
        Request("too_big", list(range(1, 34))),  # 33 tokens need 9 blocks > 8
        Request("empty", []),
        Request("too_many", [1, 2], n=5),  # n > max_num_seqs
        Request("ok2", [4, 5, 6, 7, 8], max_tokens=40),
    ]
    run = drive(sched, requests)
    assert set(run.errors) == {"too_long", "too_big", "empty", "too_many"}
    assert "max_model_len=256" in run.errors["too_long"] and "9 KV blocks" in run.errors["too_big"]
    assert "empty" in run.errors["empty"] and "max_num_seqs=4" in run.errors["too_many"]
    assert set(run.outputs) == {("ok1", 0), ("ok1", 1), ("ok2", 0)}


def test_sequences_stop_at_the_cache_capacity():
    sched = make_scheduler(num_blocks=3, block_size=4)  # a sequence can never hold more than 12 tokens
    assert sched.max_seq_len == 12
    run = drive(sched, [Request("a", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], max_tokens=50)])
    assert len(run.outputs[("a", 0)]) <= 2  # stops at 12 tokens unless EOS came earlier


def test_all_requests_finish_within_a_bounded_number_of_steps():
    reqs = workload()
    total = sum(len(r.prompt) + r.n * r.max_tokens for r in reqs)
    # Memory so tight that only about one sequence fits at a time: lots of preemption, still no starvation.
    sched = make_scheduler(num_blocks=15, block_size=4, max_num_batched_tokens=16)
    run = drive(sched, reqs, max_steps=4 * total)
    assert len(run.outputs) == sum(r.n for r in reqs)


def test_decode_runs_while_a_prefill_cannot_make_progress():
    # "long" needs the whole cache; it waits (without stalling) while "short" decodes to the end.
    sched = make_scheduler(num_blocks=11, block_size=4)
    short = Request("short", [1, 2, 3], max_tokens=30)
    run = drive(sched, [short, Request("long", [(j * 5) % 39 + 1 for j in range(44)], max_tokens=1)])
    assert len(run.outputs) == 2 and not run.errors
    long_start = run.trace.index((True, ("long",)))
    assert run.trace[0] == (True, ("short",))
    assert all(step == (False, ("short",)) for step in run.trace[1:long_start])
    assert long_start == 1 + len(run.outputs[("short", 0)]) - 1  # every step in between decoded "short"


def test_abort_frees_the_request_and_others_continue():
    sched = make_scheduler(num_blocks=64)
    sched.add(SequenceGroup("a", [1, 2, 3, 4, 5], n=3))
    sched.add(SequenceGroup("b", [6, 7, 8]))
    out = sched.schedule()
    assert out.is_prefill and [i.fork for i in out.scheduled] == [True, True]
    sched.on_step_done(out)
    for item in out.scheduled:
        for seq in sched.fork_group(item.group):
            seq.append_token(5)
    assert sched.abort("a") and not sched.abort("a") and not sched.abort("nope")
    assert [s.request_id for s in sched.running] == ["b"]
    assert all(s.finish_reason == "abort" for s in out.scheduled[0].group.seqs)
    out = sched.schedule()
    assert not out.is_prefill and [i.seq.request_id for i in out.scheduled] == ["b"]


def test_protocol_misuse_raises_clear_errors():
    sched = make_scheduler(num_blocks=64)
    sched.add(SequenceGroup("a", [1, 2, 3]))
    with pytest.raises(ValueError, match="already in use"):
        sched.add(SequenceGroup("a", [4]))
    out = sched.schedule()
    with pytest.raises(RuntimeError, match="on_step_done"):
        sched.schedule()
    sched.on_step_done(out)
    with pytest.raises(RuntimeError, match="called twice"):
        sched.on_step_done(out)
    with pytest.raises(RuntimeError, match="append the token sampled"):
        sched.schedule()
    (seq,) = sched.fork_group(out.scheduled[0].group)
    with pytest.raises(RuntimeError, match="already forked"):
        sched.fork_group(out.scheduled[0].group)
    seq.append_token(3)
    assert not sched.schedule().is_prefill


def test_decode_preempts_the_youngest_and_requeues_it_ahead_of_younger_requests():
    sched = make_scheduler(num_blocks=4, block_size=4)
    for rid in "abc":
        sched.add(SequenceGroup(rid, [1, 2, 3, 4]))
    out = sched.schedule()
    assert out.is_prefill and [i.seq.request_id for i in out.scheduled] == ["a", "b", "c"]
    sched.on_step_done(out)
    for item in out.scheduled:
        sched.fork_group(item.group)[0].append_token(9)
    sched.add(SequenceGroup("d", [5, 6]))
    # One free block; each decode needs a new one. "d" is not admitted: the decodes' next blocks are reserved.
    out = sched.schedule()
    assert not out.is_prefill
    assert [i.seq.request_id for i in out.scheduled] == ["a", "b"]
    assert [s.request_id for s in out.preempted] == ["c"]
    assert [s.request_id for s in sched.waiting] == ["c", "d"]
    c = out.preempted[0]
    assert c.status is SequenceStatus.WAITING and c.block_table == [] and c.num_computed_tokens == 0
    assert c.token_ids == [1, 2, 3, 4, 9]  # prompt and output kept for the recompute


def test_recompute_samples_only_once_the_whole_context_is_back():
    # Two requests, one block each of room to grow: the younger is preempted, then re-prefilled in chunks.
    sched = make_scheduler(num_blocks=4, block_size=4, max_num_batched_tokens=4)
    seen = []
    sched.add(SequenceGroup("old", [1, 2, 3, 4, 5, 6]))
    sched.add(SequenceGroup("young", [9, 8, 7, 6, 5, 4, 3]))
    preempted = False
    for _ in range(60):
        if not sched.has_unfinished():
            break
        out = sched.schedule()
        preempted |= any(s.request_id == "young" for s in out.preempted)
        sched.on_step_done(out)
        for item in out.scheduled:
            seq = item.seq
            if out.is_prefill and seq.num_output_tokens > 0:  # a recompute of a sampled sequence
                seen.append((item.context_len == seq.num_tokens, item.sample, item.fork))
            if item.sample:
                for s in sched.fork_group(item.group) if item.fork else [seq]:
                    s.append_token(1)
                    if s.num_output_tokens >= 6 or sched.reached_length_cap(s):
                        sched.finish(s, "length")
    assert preempted and not sched.has_unfinished()
    assert seen and all(sample == done and not fork for done, sample, fork in seen)


def test_config_validation():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_seqs'\]"):
        SchedulerConfig.from_dict({"max_model_len": 64, "max_seqs": 3})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['max_model_len'\]"):
        SchedulerConfig.from_dict({})
    with pytest.raises(ValueError, match="max_num_seqs must be an int >= 1"):
        SchedulerConfig(max_model_len=64, max_num_seqs=0)
    with pytest.raises(ValueError, match="enable_chunked_prefill must be true or false"):
        SchedulerConfig(max_model_len=64, enable_chunked_prefill="yes")
    with pytest.raises(ValueError, match="without chunked prefill"):
        SchedulerConfig(max_model_len=4096, enable_chunked_prefill=False)
    cfg = SchedulerConfig.from_dict({"max_model_len": 64, "max_num_batched_tokens": 32})
    assert cfg.max_num_batched_tokens == 32 and cfg.max_num_seqs == 64 and cfg.enable_chunked_prefill
    with pytest.raises(ValueError, match="enable_prefix_caching"):
        Scheduler(cfg, BlockManager(8, 4, enable_prefix_caching=False))


@st.composite
def workloads(draw):
    reqs = []
    for i in range(draw(st.integers(1, 6))):
        prefix = draw(st.sampled_from([[], SYSTEM, SYSTEM[:5]]))
        suffix = draw(st.lists(st.integers(1, VOCAB - 1), min_size=0 if prefix else 1, max_size=14))
        reqs.append(Request(f"q{i}", prefix + suffix, n=draw(st.integers(1, 3)), max_tokens=draw(st.integers(1, 12))))
    return reqs


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reqs=workloads(),
    block_size=st.integers(1, 6),
    spare_blocks=st.integers(0, 12),
    budget=st.integers(1, 40),
    max_num_seqs=st.integers(3, 8),
    prefix_caching=st.booleans(),
)
def test_random_workloads_match_an_unconstrained_run(
    reqs, block_size, spare_blocks, budget, max_num_seqs, prefix_caching
):
    longest = max(len(r.prompt) + r.max_tokens for r in reqs)
    num_blocks = -(-longest // block_size) + spare_blocks  # one sequence always fits, often little more
    reference = drive(make_scheduler(200, block_size, prefix_caching), reqs)
    sched = make_scheduler(
        num_blocks, block_size, prefix_caching, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs
    )
    total = sum(len(r.prompt) + r.n * r.max_tokens for r in reqs)
    run = drive(sched, reqs, max_steps=10 * total + 50)
    assert run.outputs == reference.outputs
