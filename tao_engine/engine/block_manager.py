"""Paged KV-cache bookkeeping: which cache blocks each sequence's tokens live in, shared where possible.

Token position p of a sequence lives in slot `block_table[p // block_size] * block_size + p % block_size`.

Every block is in exactly one state:
- in use: ref_count > 0, held by that many block tables (forked samples and prefix-cache hits share blocks);
- free: ref_count 0, content meaningless;
- evictable: ref_count 0 but full and registered in the prefix cache, so a later prompt with the same prefix reuses
  its KV. It is recycled least-recently-used first, and only when no free block is left.

Sharing is copy-on-write: a sequence about to write into a block it shares gets a fresh block, and `allocate` returns
the (src, dst) pair the engine copies in every layer before the forward. Only a forked group's partial tail block is
ever copied: full blocks are never written again.

Prefix caching keys a full block by a chained hash of (previous block's hash, its token ids), so equal hashes mean
equal whole prefixes. A block is registered by the `allocate` of the step that fills it, so a prompt admitted later
in the same step already shares it: this relies on the runner writing every new K/V of a layer into the cache before
that layer's attention reads the cache (the engine runs the forward of every step it schedules).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from tao_engine.engine.sequence import Sequence

_ROOT_HASH = b"tao_engine.prefix"


def chain_hash(prev_hash: bytes, token_ids: Seq[int]) -> bytes:
    """Stable 128-bit hash of a full block given its predecessor's (no per-process salt, unlike Python's hash)."""
    h = hashlib.blake2b(prev_hash, digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    num_tokens: int = 0  # slots holding computed KV
    hash: bytes | None = None  # chained hash, set once the block is full (prefix caching only)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        for name, value in (("num_blocks", num_blocks), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BlockManager: {name} must be an int >= 1, got {value!r}")
        if not isinstance(enable_prefix_caching, bool):
            raise ValueError(f"BlockManager: enable_prefix_caching must be a bool, got {enable_prefix_caching!r}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # oldest release first
        self._cached: dict[bytes, int] = {}  # hash -> block id, for registered blocks (in use or evictable)
        self._holders: dict[int, Sequence] = {}  # seq_id -> sequence holding blocks
        self._pending_stats: dict[int, tuple[int, int]] = {}  # seq_id -> (queried, hit) until its allocate
        self.prefix_queries = 0  # tokens looked up in the prefix cache at admissions that went ahead
        self.prefix_hits = 0  # of those, tokens served from the cache

    # ---- capacity -------------------------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take now: free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_evictable_blocks(self) -> int:
        return len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks registered in the prefix cache, in use or evictable."""
        return len(self._cached)

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    def num_blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """Fresh blocks `allocate(seq, num_new_tokens)` would take (appended ones plus copy-on-write copies)."""
        if num_new_tokens <= 0:
            return 0
        start = seq.num_computed_tokens
        end = start + num_new_tokens
        bs = self.block_size
        table = seq.block_table
        needed = max(0, -(-end // bs) - len(table))
        for idx in range(start // bs, min(len(table), -(-end // bs))):
            if self.blocks[table[idx]].ref_count > 1:
                needed += 1
        return needed

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        return self.num_blocks_needed(seq, num_new_tokens) <= self.num_free_blocks

    def num_tokens_fitting(self, seq: Sequence, limit: int) -> int:
        """The largest k <= limit that `can_allocate(seq, k)` allows (0 if none)."""
        budget = self.num_free_blocks
        if limit <= 0:
            return 0
        if self.num_blocks_needed(seq, limit) <= budget:
            return limit
        lo, hi = 0, limit  # needed(k) is monotone in k: needed(lo) fits, needed(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.num_blocks_needed(seq, mid) <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    # ---- allocation -----------------------------------------------------------------------------------------------

    def allocate(self, seq: Sequence, num_new_tokens: int) -> list[tuple[int, int]]:
        """Make the block table cover `num_computed_tokens + num_new_tokens` tokens; return copy-on-write pairs."""
        if num_new_tokens < 1:
            raise ValueError(f"BlockManager.allocate: num_new_tokens must be >= 1, got {num_new_tokens}")
        if seq.num_computed_tokens + num_new_tokens > seq.num_tokens:
            raise ValueError(
                f"BlockManager.allocate: sequence {seq.seq_id} has {seq.num_tokens} tokens, "
                f"{seq.num_computed_tokens} computed; cannot compute {num_new_tokens} more"
            )
        needed = self.num_blocks_needed(seq, num_new_tokens)
        if needed > self.num_free_blocks:
            raise RuntimeError(
                f"BlockManager.allocate: sequence {seq.seq_id} needs {needed} blocks, {self.num_free_blocks} "
                "available; check can_allocate first"
            )
        bs = self.block_size
        start = seq.num_computed_tokens
        end = start + num_new_tokens
        table = seq.block_table
        copies: list[tuple[int, int]] = []
        for idx in range(start // bs, min(len(table), -(-end // bs))):
            src = self.blocks[table[idx]]
            if src.ref_count > 1:
                # Shared with a sibling: write into a private copy. Keep the tokens before `start` (the shared part).
                dst = self._take_block()
                kept = max(0, min(bs, start - idx * bs))
                src.ref_count -= 1
                dst.num_tokens = kept
                table[idx] = dst.block_id
                if kept:
                    copies.append((src.block_id, dst.block_id))
        while len(table) * bs < end:
            table.append(self._take_block().block_id)
        for idx in range(start // bs, -(-end // bs)):
            block = self.blocks[table[idx]]
            block.num_tokens = min(bs, end - idx * bs)
            if self.enable_prefix_caching and block.num_tokens == bs and block.hash is None:
                prev = self.blocks[table[idx - 1]].hash if idx else _ROOT_HASH
                assert prev is not None, "a full block's predecessor is full and hashed"
                block.hash = chain_hash(prev, seq.token_ids[idx * bs : (idx + 1) * bs])
                # A block computed twice (same prefix in two sequences at once) keeps the first registration.
                self._cached.setdefault(block.hash, block.block_id)
        self._holders[seq.seq_id] = seq
        stats = self._pending_stats.pop(seq.seq_id, None)
        if stats is not None:
            self.prefix_queries += stats[0]
            self.prefix_hits += stats[1]
        return copies

    def mark_computed(self, seq: Sequence, num_new_tokens: int) -> None:
        """After the forward: the next `num_new_tokens` tokens' KV (allocated for) is in the cache."""
        end = seq.num_computed_tokens + num_new_tokens
        if num_new_tokens < 0 or end > seq.num_tokens or end > len(seq.block_table) * self.block_size:
            raise RuntimeError(
                f"BlockManager.mark_computed: sequence {seq.seq_id} would have {end} computed tokens but has "
                f"{seq.num_tokens} tokens and blocks for {len(seq.block_table) * self.block_size}"
            )
        seq.num_computed_tokens = end

    def forget_uncomputed(self, seq: Sequence, start: int, end: int) -> None:
        """A step that was to compute positions [start, end) of `seq` failed: the blocks holding them were hashed
        when allocated, but their KV was never written, so no later request may match them."""
        bs = self.block_size
        for idx in range(start // bs, min(len(seq.block_table), -(-end // bs))):
            block = self.blocks[seq.block_table[idx]]
            if block.hash is not None and self._cached.get(block.hash) == block.block_id:
                del self._cached[block.hash]
            block.hash = None

    def match_prefix(self, seq: Sequence) -> int:
        """At first allocation: reuse the longest cached chain of full blocks of the sequence's tokens.

        Never the whole sequence: at least its last token is left to compute, so the last position's logits exist.
        Sets `seq.num_computed_tokens` (and `seq.num_cached_tokens`) and returns the number of tokens reused.
        """
        if seq.block_table or seq.num_computed_tokens:
            raise RuntimeError(
                f"BlockManager.match_prefix: sequence {seq.seq_id} already holds blocks; match only at admission"
            )
        matched: list[int] = []
        if self.enable_prefix_caching:
            bs = self.block_size
            h = _ROOT_HASH
            for idx in range((seq.num_tokens - 1) // bs):
                h = chain_hash(h, seq.token_ids[idx * bs : (idx + 1) * bs])
                block_id = self._cached.get(h)
                if block_id is None:
                    break
                matched.append(block_id)
        for block_id in matched:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._evictable[block_id]
            block.ref_count += 1
        seq.block_table = matched
        seq.num_computed_tokens = seq.num_cached_tokens = len(matched) * self.block_size
        if matched:
            self._holders[seq.seq_id] = seq
        self._pending_stats[seq.seq_id] = (seq.num_tokens, seq.num_computed_tokens)
        return seq.num_computed_tokens

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent (its KV up to `parent.num_computed_tokens`)."""
        if child.block_table:
            raise RuntimeError(f"BlockManager.fork: child sequence {child.seq_id} already holds blocks")
        for block_id in parent.block_table:
            self.blocks[block_id].ref_count += 1
        child.block_table = list(parent.block_table)
        child.num_computed_tokens = parent.num_computed_tokens
        if child.block_table:
            self._holders[child.seq_id] = child

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks; it then holds none and has no computed tokens."""
        # Tail first, so that under LRU eviction a cached prefix outlives the blocks that extend it.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count > 0:
                continue
            if block.hash is not None and self._cached.get(block.hash) == block_id:
                self._evictable[block_id] = None
            else:
                block.hash = None
                block.num_tokens = 0
                self._free.append(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0
        self._holders.pop(seq.seq_id, None)
        self._pending_stats.pop(seq.seq_id, None)

    def reset_prefix_cache(self) -> None:
        """Forget every cached block, e.g. after a weight update made their KV stale. Needs no sequence running."""
        if self._holders:
            raise RuntimeError(
                f"BlockManager.reset_prefix_cache: {len(self._holders)} sequences still hold KV blocks; reset between "
                "generate calls, when no request is running"
            )
        for block_id in self._evictable:
            self.blocks[block_id].hash = None
            self.blocks[block_id].num_tokens = 0
            self._free.append(block_id)
        self._evictable.clear()
        self._cached.clear()
        self.prefix_queries = self.prefix_hits = 0

    def _take_block(self) -> Block:
        if self._free:
            block = self.blocks[self._free.popleft()]
        else:
            block_id, _ = self._evictable.popitem(last=False)  # least recently released
            block = self.blocks[block_id]
            del self._cached[block.hash]  # type: ignore[arg-type]
            block.hash = None
        block.ref_count = 1
        block.num_tokens = 0
        return block

    # ---- checking -------------------------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Raise AssertionError unless the bookkeeping is consistent (for tests; O(blocks + held tokens))."""
        bs = self.block_size
        free, evictable = list(self._free), list(self._evictable)
        assert len(set(free)) == len(free), "a block is twice in the free list"
        assert not set(free) & set(evictable), "a block is both free and evictable"
        refs = [0] * self.num_blocks
        for seq_id, seq in self._holders.items():
            assert seq.seq_id == seq_id and seq.block_table, f"sequence {seq_id} is listed as holder without blocks"
            assert len(set(seq.block_table)) == len(seq.block_table), f"sequence {seq_id} holds a block twice"
            assert len(seq.block_table) * bs >= seq.num_computed_tokens, f"sequence {seq_id}: computed KV unmapped"
            for block_id in seq.block_table:
                refs[block_id] += 1
            if self.enable_prefix_caching:
                h = _ROOT_HASH
                for idx in range(seq.num_computed_tokens // bs):
                    h = chain_hash(h, seq.token_ids[idx * bs : (idx + 1) * bs])
                    assert self.blocks[seq.block_table[idx]].hash == h, f"sequence {seq_id}: wrong hash, block {idx}"
        for block in self.blocks:
            bid = block.block_id
            assert block.ref_count == refs[bid], f"block {bid}: ref_count {block.ref_count}, held {refs[bid]} times"
            states = (block.ref_count > 0) + (bid in self._free) + (bid in self._evictable)
            assert states == 1, f"block {bid} is in {states} of the states in use / free / evictable"
            if bid in self._free:
                assert block.hash is None, f"free block {bid} still has a hash"
            if bid in self._evictable:
                assert block.hash is not None and self._cached.get(block.hash) == bid, f"evictable {bid} unregistered"
        for h, bid in self._cached.items():
            assert self.blocks[bid].hash == h and self.blocks[bid].num_tokens == bs, f"cache entry of {bid} is stale"
