"""BlockManager: reference counts, copy-on-write after fork, prefix caching with LRU eviction, no leaks.

A fake KV cache (one token id per slot) is written through the block tables exactly as the model would write K/V, so
the tests check that every sequence reads back its own tokens: the bookkeeping is right, not merely consistent.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tao_engine.engine.block_manager import BlockManager
from tao_engine.engine.sequence import Sequence


class FakeKV:
    """[num_blocks][block_size] token ids standing in for the K/V tensors."""

    def __init__(self, bm: BlockManager) -> None:
        self.bm = bm
        self.slots: list[list[int | None]] = [[None] * bm.block_size for _ in range(bm.num_blocks)]

    def copy(self, pairs: list[tuple[int, int]]) -> None:
        for src, dst in pairs:
            self.slots[dst] = list(self.slots[src])

    def write(self, seq: Sequence, start: int, end: int) -> None:
        bs = self.bm.block_size
        for p in range(start, end):
            self.slots[seq.block_table[p // bs]][p % bs] = seq.token_ids[p]

    def read(self, seq: Sequence, end: int) -> list[int | None]:
        bs = self.bm.block_size
        return [self.slots[seq.block_table[p // bs]][p % bs] for p in range(end)]


def manager(*args: object, **kwargs: object) -> tuple[BlockManager, FakeKV]:
    """A BlockManager(*args, **kwargs) and the fake K/V storage its blocks index."""
    bm = BlockManager(*args, **kwargs)
    return bm, FakeKV(bm)


def make_seq(seq_id: int, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, f"r{seq_id}", 0, list(tokens), len(tokens), arrival=seq_id)


def compute(bm: BlockManager, kv: FakeKV, seq: Sequence, n: int) -> list[tuple[int, int]]:
    """allocate + copy + write + mark_computed: what one engine step does for `n` tokens of `seq`."""
    pairs = bm.allocate(seq, n)
    kv.copy(pairs)
    start = seq.num_computed_tokens
    kv.write(seq, start, start + n)
    bm.mark_computed(seq, n)
    return pairs


def admit(bm: BlockManager, kv: FakeKV, seq: Sequence) -> int:
    """match_prefix then prefill the rest in one go; returns the cached token count."""
    hit = bm.match_prefix(seq)
    compute(bm, kv, seq, seq.num_tokens - hit)
    return hit


def test_allocate_and_free_return_every_block():
    bm, kv = manager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    seq = make_seq(0, list(range(10)))
    assert admit(bm, kv, seq) == 0
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 5
    seq.append_token(99)
    assert bm.num_blocks_needed(seq, 1) == 0  # position 10 lands in block 2, which has room
    compute(bm, kv, seq, 1)
    assert kv.read(seq, 11) == seq.token_ids
    bm.check_invariants()
    bm.free(seq)
    assert bm.num_free_blocks == 8 and seq.block_table == [] and seq.num_computed_tokens == 0
    bm.check_invariants()


def test_fork_shares_blocks_and_copies_the_partial_tail_on_first_write():
    bm, kv = manager(num_blocks=8, block_size=4)
    parent = make_seq(0, [1, 2, 3, 4, 5, 6])  # a full block and a tail holding 2 tokens
    admit(bm, kv, parent)
    child = make_seq(1, parent.token_ids)
    bm.fork(parent, child)
    full, tail = parent.block_table
    assert child.block_table == [full, tail] and child.num_computed_tokens == 6
    assert bm.blocks[full].ref_count == 2 and bm.blocks[tail].ref_count == 2
    free_before = bm.num_free_blocks
    parent.append_token(7)
    child.append_token(8)
    assert bm.num_blocks_needed(parent, 1) == 1  # the shared tail must be copied first
    pairs = compute(bm, kv, parent, 1)
    new_tail = parent.block_table[1]
    assert pairs == [(tail, new_tail)] and new_tail != tail
    assert parent.block_table[0] == full and bm.blocks[tail].ref_count == 1
    # The child is now the only holder of the old tail: it writes in place, no copy.
    assert compute(bm, kv, child, 1) == []
    assert child.block_table == [full, tail] and bm.num_free_blocks == free_before - 1
    assert kv.read(parent, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert kv.read(child, 7) == [1, 2, 3, 4, 5, 6, 8]
    bm.check_invariants()
    bm.free(parent)
    bm.free(child)
    assert bm.num_free_blocks == 8
    bm.check_invariants()


def test_fork_on_a_block_boundary_copies_nothing():
    bm, kv = manager(num_blocks=6, block_size=4)
    parent = make_seq(0, list(range(8)))
    admit(bm, kv, parent)
    children = [make_seq(i, parent.token_ids) for i in (1, 2)]
    for c in children:
        bm.fork(parent, c)
    for i, s in enumerate([parent, *children]):
        s.append_token(100 + i)
        assert compute(bm, kv, s, 1) == []  # each writes into its own fresh block
        assert kv.read(s, 9) == list(range(8)) + [100 + i]
    assert bm.blocks[parent.block_table[0]].ref_count == 3
    bm.check_invariants()


def test_prefix_cache_hits_for_a_shared_system_prompt():
    bm, kv = manager(num_blocks=16, block_size=4)
    system = list(range(100, 112))  # 3 full blocks
    first = make_seq(0, system + [1, 2])
    assert admit(bm, kv, first) == 0
    second = make_seq(1, system + [3, 4, 5, 6])  # its 4th block is full too
    assert admit(bm, kv, second) == 12
    assert second.num_cached_tokens == 12 and second.block_table[:3] == first.block_table[:3]
    assert all(bm.blocks[b].ref_count == 2 for b in first.block_table[:3])
    assert kv.read(second, second.num_tokens) == second.token_ids
    assert bm.prefix_queries == 14 + 16 and bm.prefix_hits == 12
    bm.check_invariants()
    bm.free(first)
    bm.free(second)
    assert bm.num_free_blocks == 16 and bm.num_evictable_blocks == 4  # 3 shared + second's 4th full block
    assert bm.num_cached_blocks == 4
    # A cached block is found again after its holders are gone, and leaves the evictable pool while used.
    third = make_seq(2, system + [3, 4, 5, 6, 7])
    assert admit(bm, kv, third) == 16
    assert bm.num_evictable_blocks == 0 and kv.read(third, third.num_tokens) == third.token_ids
    bm.check_invariants()


def test_prefix_match_always_leaves_a_token_to_compute():
    bm, kv = manager(num_blocks=8, block_size=4)
    admit(bm, kv, make_seq(0, list(range(9))))  # caches blocks [0..3] and [4..7]
    same = make_seq(1, list(range(8)))  # exactly the two cached blocks
    assert bm.match_prefix(same) == 4  # the last block is recomputed so its last position yields logits
    one_block = make_seq(2, list(range(4)))
    assert bm.match_prefix(one_block) == 0
    bm.free(same)
    bm.free(one_block)
    bm.check_invariants()


def test_lru_eviction_takes_the_least_recently_released_and_tails_first():
    bm, kv = manager(num_blocks=6, block_size=2)
    a = make_seq(0, [1, 2, 3, 4, 5])  # full blocks [1,2], [3,4], tail [5]
    b = make_seq(1, [7, 8, 9, 10, 11])
    admit(bm, kv, a)
    admit(bm, kv, b)
    a_blocks, b_blocks = list(a.block_table), list(b.block_table)
    bm.free(a)  # released first: least recently used
    bm.free(b)
    assert bm.num_free_blocks == 6 and bm.num_evictable_blocks == 4
    # 2 blocks are plainly free (the tails); taking 3 evicts one cached block: a's second, not a's first.
    big = make_seq(2, [20, 21, 22, 23, 24, 25])
    admit(bm, kv, big)
    assert set(big.block_table) == {a_blocks[2], b_blocks[2], a_blocks[1]}
    assert bm.match_prefix(make_seq(3, [1, 2, 3, 4, 5])) == 2  # [1,2] survives, [3,4] is gone
    assert bm.match_prefix(make_seq(4, [7, 8, 9, 10, 11])) == 4
    bm.check_invariants()


def test_without_prefix_caching_nothing_is_cached():
    bm, kv = manager(num_blocks=8, block_size=2, enable_prefix_caching=False)
    a = make_seq(0, list(range(6)))
    admit(bm, kv, a)
    bm.free(a)
    assert bm.num_cached_blocks == 0 and bm.num_evictable_blocks == 0
    assert admit(bm, kv, make_seq(1, list(range(6)))) == 0
    bm.check_invariants()


def test_reset_prefix_cache_needs_idle_manager_and_forgets_everything():
    bm, kv = manager(num_blocks=8, block_size=2)
    a = make_seq(0, list(range(7)))
    admit(bm, kv, a)
    with pytest.raises(RuntimeError, match="still hold KV blocks"):
        bm.reset_prefix_cache()
    bm.free(a)
    assert bm.num_cached_blocks == 3
    bm.reset_prefix_cache()
    assert bm.num_cached_blocks == 0 and bm.num_evictable_blocks == 0 and bm.num_free_blocks == 8
    assert bm.match_prefix(make_seq(1, list(range(7)))) == 0
    bm.check_invariants()


def test_allocate_beyond_capacity_raises_and_bad_sizes_are_rejected():
    bm = BlockManager(num_blocks=2, block_size=2)
    seq = make_seq(0, list(range(5)))
    assert not bm.can_allocate(seq, 5) and bm.can_allocate(seq, 4)
    with pytest.raises(RuntimeError, match="check can_allocate"):
        bm.allocate(seq, 5)
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(num_blocks=0, block_size=2)
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(num_blocks=4, block_size=True)


def test_match_prefix_on_a_sequence_holding_blocks_is_an_error():
    bm, kv = manager(num_blocks=4, block_size=2)
    seq = make_seq(0, [1, 2, 3])
    admit(bm, kv, seq)
    with pytest.raises(RuntimeError, match="already holds blocks"):
        bm.match_prefix(seq)


# ---- random cycles -------------------------------------------------------------------------------------------------

PREFIXES = [[], [5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 1, 2, 3], [11, 12]]


def _random_cycles(data: st.DataObject, prefix_caching: bool, num_ops: int) -> None:
    block_size = data.draw(st.integers(1, 5), label="block_size")
    num_blocks = data.draw(st.integers(4, 24), label="num_blocks")
    bm, kv = manager(num_blocks, block_size, enable_prefix_caching=prefix_caching)
    live: list[Sequence] = []
    next_id = 0
    for _ in range(num_ops):
        op = data.draw(st.sampled_from(["new", "step", "step", "step", "fork", "free"]))
        if op == "new" or not live:
            prefix = data.draw(st.sampled_from(PREFIXES))
            suffix = data.draw(st.lists(st.integers(0, 3), min_size=1 if not prefix else 0, max_size=8))
            seq = make_seq(next_id, prefix + suffix)
            next_id += 1
            hit = bm.match_prefix(seq)
            assert hit % block_size == 0 and hit < seq.num_tokens
            assert not prefix_caching or hit == 0 or kv.read(seq, hit) == seq.token_ids[:hit]
            chunk = data.draw(st.integers(1, seq.num_pending_tokens))
            if bm.can_allocate(seq, chunk):
                compute(bm, kv, seq, chunk)
                live.append(seq)
            else:
                bm.free(seq)  # the scheduler's undo of an admission that does not fit
        elif op == "step":
            seq = data.draw(st.sampled_from(live))
            if seq.num_pending_tokens == 0:
                seq.append_token(data.draw(st.integers(0, 3)))
            limit = data.draw(st.integers(1, seq.num_pending_tokens))
            fit = bm.num_tokens_fitting(seq, limit)
            assert fit == max([k for k in range(limit + 1) if bm.can_allocate(seq, k)])
            if fit:
                compute(bm, kv, seq, fit)
        elif op == "fork":
            parent = data.draw(st.sampled_from(live))
            child = make_seq(next_id, parent.token_ids)
            next_id += 1
            bm.fork(parent, child)
            live.append(child)
        else:
            seq = live.pop(data.draw(st.integers(0, len(live) - 1)))
            bm.free(seq)
        bm.check_invariants()
        for seq in live:
            assert kv.read(seq, seq.num_computed_tokens) == seq.token_ids[: seq.num_computed_tokens]
    for seq in live:
        bm.free(seq)
    bm.check_invariants()
    assert bm.num_free_blocks == num_blocks  # nothing leaked: every block is free or evictable


_CYCLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_CYCLES
@given(st.data())
def test_random_cycles_with_prefix_caching(data):
    _random_cycles(data, prefix_caching=True, num_ops=80)


@_CYCLES
@given(st.data())
def test_random_cycles_without_prefix_caching(data):
    _random_cycles(data, prefix_caching=False, num_ops=80)
