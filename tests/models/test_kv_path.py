"""The paged KV cache path through the whole model: prefill, chunked prefill, a cached prefix, decode steps and a
copy-on-write fork all give the logits of the cache-free full-sequence forward (fp32, within 1e-5)."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ops
from tao_engine.engine.kv_allocation import allocate_kv_caches
from tao_engine.forward_batch import ForwardBatch
from tests import helpers
from tests.tolerances import check

BLOCK_SIZE = 4
NUM_BLOCKS = 40

CONFIGS = {
    "llama_gqa": dict(architectures=["LlamaForCausalLM"], model_type="llama"),
    "qwen3_qk_norm": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=16, qk_norm=True),
}


def tiny_model(name: str) -> torch.nn.Module:
    # unit-order activations (randomize_), so wiring mistakes show in the logits
    return helpers.tiny_model(len(name), **CONFIGS[name], vocab_size=97, max_position_embeddings=256)


class Pager:
    """The test's block manager: blocks handed out in shuffled order, so no table is contiguous."""

    def __init__(self, seed: int) -> None:
        self.free = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed)).tolist()
        self.tables: dict[int, list[int]] = {}

    def reserve(self, seq: int, length: int) -> None:
        table = self.tables.setdefault(seq, [])
        while len(table) * BLOCK_SIZE < length:
            table.append(self.free.pop())

    def slot(self, seq: int, position: int) -> int:
        return self.tables[seq][position // BLOCK_SIZE] * BLOCK_SIZE + position % BLOCK_SIZE


def run_step(model, caches, pager: Pager, tokens: dict[int, list[int]], spans: list[tuple[int, int, int]], prefill,
             packed=None, grad: bool = False):
    """One forward over spans (seq, start, end) of tokens[seq] -> {seq: logits of its span [end - start, V]};
    packed: the engine's packed weights (PackedDecoderWeights) for the LM head and, in a decode step, the layers, as
    the engine runs them (a prefill uses the modules' weights)."""
    for seq, _, end in spans:
        pager.reserve(seq, end)
    q_lens = [end - start for _, start, end in spans]
    ctx_lens = [end for _, _, end in spans]
    width = max(len(pager.tables[seq]) for seq, _, _ in spans)
    tables = torch.zeros(len(spans), width, dtype=torch.int32)  # padded with 0, as the engine does
    for row, (seq, _, _) in enumerate(spans):
        tables[row, : len(pager.tables[seq])] = torch.tensor(pager.tables[seq])
    batch = ForwardBatch(
        positions=torch.tensor([p for _, s, e in spans for p in range(s, e)], dtype=torch.int64),
        cu_seqlens_q=torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32),
        max_seqlen_q=max(q_lens),
        is_prefill=prefill,
        slot_mapping=torch.tensor([pager.slot(seq, p) for seq, s, e in spans for p in range(s, e)]),
        block_tables=tables,
        context_lens=torch.tensor(ctx_lens, dtype=torch.int32),
        cu_seqlens_k=torch.tensor([0, *torch.tensor(ctx_lens).cumsum(0).tolist()], dtype=torch.int32),
        max_seqlen_k=max(ctx_lens),
        has_cached_prefix=any(start > 0 for _, start, _ in spans),
    )
    ids = torch.tensor([t for seq, s, e in spans for t in tokens[seq][s:e]])
    with torch.set_grad_enabled(grad):
        if packed is None:
            logits = model.compute_logits(model(ids, batch, kv_caches=caches))
        else:
            linears = None if prefill else packed.layers
            logits = model.compute_logits(model(ids, batch, kv_caches=caches, linears=linears), packed.head)
    return {seq: out for (seq, _, _), out in zip(spans, logits.split(q_lens), strict=True)}


def full_logits(model, ids: list[int]) -> torch.Tensor:
    """The cache-free oracle: the whole sequence in one forward -> [T, V]."""
    with torch.no_grad():
        return model.compute_logits(model(torch.tensor(ids), ForwardBatch.for_sequences([len(ids)])))


def assert_logits(model, got: torch.Tensor, ids: list[int], rows: slice = slice(None),
                  expected: torch.Tensor | None = None) -> None:
    """got [r, V] (a paged path) within the whole-model bound around the cache-free forward of ids: two fp32
    computations of the same logits, in other orders (tests/bounds/model.py)."""
    expected = full_logits(model, ids)[rows] if expected is None else expected
    check("model_outputs", got, expected, model=model, outputs=lambda m: full_logits(m, ids)[rows])


def fresh(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    caches = allocate_kv_caches(model.config, NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    for k, v in caches:  # garbage in unwritten slots: anything read by mistake shows
        k.fill_(1e3)
        v.fill_(-1e3)
    return caches


def random_tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, 97, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prefill_then_decode_matches_full_forward(name):
    model, pager = tiny_model(name), Pager(seed=1)
    caches = fresh(model)
    tokens = {0: random_tokens(5, 10), 1: random_tokens(11, 11), 2: random_tokens(1, 12)}
    spans = [(seq, 0, len(ids)) for seq, ids in tokens.items()]
    got = {seq: [out] for seq, out in run_step(model, caches, pager, tokens, spans, True).items()}
    for _ in range(5):
        for seq in tokens:  # greedy next token
            tokens[seq].append(int(got[seq][-1][-1].argmax()))
        spans = [(seq, len(ids) - 1, len(ids)) for seq, ids in tokens.items()]
        for seq, out in run_step(model, caches, pager, tokens, spans, False).items():
            got[seq].append(out)
    for seq, ids in tokens.items():
        # the last token was appended, never fed
        assert_logits(model, torch.cat(got[seq])[: len(ids) - 1], ids, slice(None, -1))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_chunked_prefill_equals_one_shot_prefill(name):
    model = tiny_model(name)
    tokens = {0: random_tokens(23, 20), 1: random_tokens(13, 21)}
    one_shot = run_step(model, fresh(model), Pager(2), tokens, [(0, 0, 23), (1, 0, 13)], True)
    caches, pager = fresh(model), Pager(3)
    chunks = {0: [0, 7, 16, 23], 1: [0, 5, 6, 13]}  # three chunks each, cut at and off block boundaries
    got: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for i in range(3):
        spans = [(seq, cuts[i], cuts[i + 1]) for seq, cuts in chunks.items()]
        for seq, out in run_step(model, caches, pager, tokens, spans, True).items():
            got[seq].append(out)
    for seq, expected in one_shot.items():
        assert_logits(model, torch.cat(got[seq]), tokens[seq], expected=expected)
        assert_logits(model, expected, tokens[seq])


def test_cached_prefix_plus_rest_equals_full_prefill():
    model, pager = tiny_model("llama_gqa"), Pager(seed=4)
    caches = fresh(model)
    prefix = random_tokens(8, 30)  # two whole blocks, shared
    tokens = {0: prefix + random_tokens(3, 31), 1: prefix + random_tokens(6, 32), 2: random_tokens(9, 33)}
    run_step(model, caches, pager, tokens, [(0, 0, 11)], True)
    pager.tables[1] = pager.tables[0][:2]  # sequence 1 finds the prefix in sequence 0's blocks
    # One batch mixing a sequence with a cached prefix and one without.
    got = run_step(model, caches, pager, tokens, [(1, 8, 14), (2, 0, 9)], True)
    assert_logits(model, got[1], tokens[1], slice(8, None))
    assert_logits(model, got[2], tokens[2])
    # The shared blocks still serve sequence 0.
    tokens[0].append(5)
    got = run_step(model, caches, pager, tokens, [(0, 11, 12)], False)
    assert_logits(model, got[0], tokens[0], slice(-1, None))


def test_copy_on_write_fork_of_a_shared_tail_block():
    model, pager = tiny_model("llama_gqa"), Pager(seed=5)
    caches = fresh(model)
    tokens = {0: random_tokens(6, 40)}  # block 0 full, block 1 holds 2 of 4 tokens
    run_step(model, caches, pager, tokens, [(0, 0, 6)], True)
    # Fork sequence 1: it shares the full block and gets its own copy of the partly filled tail block.
    tokens[1] = list(tokens[0])
    tail = pager.free.pop()
    pager.tables[1] = [pager.tables[0][0], tail]
    ops.copy_blocks(
        [k for k, _ in caches], [v for _, v in caches], torch.tensor([pager.tables[0][1]]), torch.tensor([tail])
    )
    got: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    for step in range(3):  # the two sequences diverge at once and write into their own tail blocks
        tokens[0].append(11 + step)
        tokens[1].append(50 + step)
        spans = [(0, 6 + step, 7 + step), (1, 6 + step, 7 + step)]
        for seq, out in run_step(model, caches, pager, tokens, spans, False).items():
            got[seq].append(out)
    for seq in (0, 1):
        assert_logits(model, torch.cat(got[seq]), tokens[seq], slice(6, None))


def test_cache_path_errors_are_clear():
    model = tiny_model("llama_gqa")
    caches = fresh(model)
    batch = ForwardBatch.for_sequences([3])
    ids = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="one \\(k_cache, v_cache\\) pair per layer"):
        model(ids, batch, kv_caches=caches[:1])
    with pytest.raises(ValueError, match="slot_mapping"):
        model(ids, batch, kv_caches=caches)
    decode = ForwardBatch(
        positions=torch.tensor([3]), cu_seqlens_q=torch.tensor([0, 1]), max_seqlen_q=1, is_prefill=False
    )
    with pytest.raises(ValueError, match="needs kv_caches"):
        model(ids[:1], decode)
    with pytest.raises(ValueError, match="block_tables and context_lens"):
        model(ids[:1], ForwardBatch(**{**decode.__dict__, "slot_mapping": torch.tensor([3])}), kv_caches=caches)
