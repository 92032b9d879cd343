"""The engine's per-step host plumbing: StepBuffers (reused host tensors instead of fresh ones per step), the
LogprobJournal (sampled log-probs kept as tensors until an output is read) and bf16 logits read by the sampler as
they are (no fp32 copy): all give exactly what the plain per-step path gave."""

from __future__ import annotations

import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.engine.logprob_journal import LogprobJournal
from tao_engine.engine.outputs import SampleOutput
from tao_engine.engine.sampler import Sampler
from tao_engine.engine.step_buffers import StepBuffers
from tests import helpers


def test_step_buffers_reuse_their_storage_and_pad_tables():
    buffers = StepBuffers("cpu")
    first = buffers.vector("ids", [3, 1, 4], torch.int64)
    second = buffers.vector("ids", [1, 5], torch.int64)
    assert second.tolist() == [1, 5] and second.data_ptr() == first.data_ptr()  # the same host buffer, refilled
    grown = buffers.vector("ids", list(range(100)), torch.int64)
    assert grown.tolist() == list(range(100))
    table = buffers.table("tables", [[7, 8, 9], [1], []], torch.int32)
    assert table.dtype == torch.int32 and table.tolist() == [[7, 8, 9], [1, 0, 0], [0, 0, 0]]
    again = buffers.table("tables", [[2], [3, 4]], torch.int32)
    assert again.tolist() == [[2, 0], [3, 4]]  # stale values of the previous fill are cleared
    assert buffers.vector("t", [0.5, 1.0], torch.float32).tolist() == [0.5, 1.0]


def test_journal_appends_in_step_order_on_flush():
    journal = LogprobJournal()
    a, b = SampleOutput(index=0), SampleOutput(index=1)
    journal.append(torch.tensor([-0.5, -1.5]), torch.tensor([-0.25, -1.25]), [a, b])
    journal.append(torch.tensor([-2.0]), torch.tensor([-3.0]), [a])
    assert a.logprobs == [] and len(journal) == 3  # nothing converted before a flush
    journal.flush()
    assert a.logprobs == [-0.5, -2.0] and a.raw_logprobs == [-0.25, -3.0]
    assert b.logprobs == [-1.5] and b.raw_logprobs == [-1.25] and len(journal) == 0
    for step in range(700):  # grows past its first capacity
        journal.append(torch.tensor([float(-step)]), torch.tensor([0.0]), [b])
    journal.flush()
    assert b.logprobs[1:] == [float(-s) for s in range(700)]


def test_generate_and_step_give_the_same_logprobs():
    model = helpers.tiny_model(0, eos_token_id=100)
    params = SamplingParams(n=3, temperature=0.9, max_tokens=9, seed=4, ignore_eos=True)
    batch = Engine(model, EngineConfig(kv_cache_bytes=2**22)).generate([[1, 2, 3, 4, 5]], params)[0]
    engine = Engine(model, EngineConfig(kv_cache_bytes=2**22))
    out = engine.add_request([1, 2, 3, 4, 5], params)
    while engine.has_unfinished():
        engine.step()
        assert all(len(s.logprobs) == len(s.token_ids) for s in out.samples)  # up to date after every step()
    for got, want in zip(out.samples, batch.samples, strict=True):
        assert got.token_ids == want.token_ids and got.logprobs == want.logprobs
        assert got.raw_logprobs == want.raw_logprobs and len(got.logprobs) == 9


def test_sampler_reads_bf16_logits_as_fp32_would():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 301, generator=gen) * 3).to(torch.bfloat16)
    params = [SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=0.0)] * 3
    params[2] = SamplingParams(temperature=1.0, min_tokens=4, repetition_penalty=1.3)  # processed rows too
    outputs = [[1, 2], [], [7], [], [3, 3], []]
    args = (params, [11, 12, 13, 14, 15, 16], outputs, [[4, 5]] * 6)
    half = Sampler(eos_token_ids=[9])(logits, *args)
    full = Sampler(eos_token_ids=[9])(logits.float(), *args)
    assert torch.equal(half.tokens, full.tokens)
    assert torch.equal(half.logprobs, full.logprobs) and torch.equal(half.raw_logprobs, full.raw_logprobs)
