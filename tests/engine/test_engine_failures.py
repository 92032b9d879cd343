"""A step whose forward raises (a bug, an interrupt, out of memory) ends the requests it was running with the error,
leaks no KV block, leaves no garbage in the prefix cache, and the engine keeps serving."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tests import helpers
from tests.tolerances import check

VOCAB = 101


class _FailOnce:
    """A forward pre-hook that raises on the `fail_at`-th forward of the module it is attached to."""

    def __init__(self, fail_at: int, exc: BaseException) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.exc = exc

    def __call__(self, module: torch.nn.Module, args: tuple) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc


def _engine(model: torch.nn.Module) -> Engine:
    # block_size 4 so that the shared prompt fills several blocks that the prefix cache registers.
    return Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4, max_num_batched_tokens=64))


@pytest.mark.parametrize("fail_at", [1, 3])  # the prompt's prefill, or a decode step
@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failed_step_ends_its_requests_and_the_engine_recovers(fail_at: int, exc: BaseException):
    model = helpers.tiny_model(0, eos_token_id=VOCAB - 1)
    prompt = list(range(1, 23))  # 22 tokens: 5 full blocks of 4
    params = SamplingParams(n=3, temperature=0.8, max_tokens=6, seed=11, ignore_eos=True)
    expected = _engine(helpers.tiny_model(0, eos_token_id=VOCAB - 1)).generate([prompt], params)[0]

    engine = _engine(model)
    total = engine.block_manager.num_free_blocks
    hook = _FailOnce(fail_at, exc)
    handle = model.model.layers[0].register_forward_pre_hook(hook)
    try:
        with pytest.raises(type(exc)):
            engine.generate([prompt], params)
    finally:
        handle.remove()
    assert not engine.has_unfinished()
    engine.block_manager.check_invariants()
    # Nothing leaked: every block is free again or an evictable prefix-cache entry of a computed block.
    assert engine.block_manager.num_free_blocks == total  # free plus evictable
    if fail_at == 1:
        # The prefill never ran: none of the prompt blocks it hashed may stay in the prefix cache.
        assert engine.block_manager.num_cached_blocks == 0

    # The same request afterwards gives what a fresh engine gives: no stale KV was matched from the failed step.
    again = engine.generate([prompt], params)[0]
    assert again.error is None
    assert [s.token_ids for s in again.samples] == [s.token_ids for s in expected.samples]
    # A prompt prefix cached by a successful prefill is read back through paged attention: same values up to rounding
    # (two fp32 paths; the whole row's log-softmax bound covers top-p's kept set).
    completions = [s.token_ids for s in expected.samples]
    check("sequence_logprobs", torch.tensor([x for s in again.samples for x in s.logprobs]),
          torch.tensor([x for s in expected.samples for x in s.logprobs], dtype=torch.float64), model=model,
          prompts=[prompt] * len(completions), completions=completions, temperature=params.temperature)


def test_failed_step_reports_the_error_on_the_output():
    model = helpers.tiny_model(0, eos_token_id=VOCAB - 1)
    engine = _engine(model)
    params = SamplingParams(n=2, temperature=0.8, max_tokens=5, seed=1, ignore_eos=True)
    output = engine.add_request(list(range(1, 10)), params)
    engine.step()  # prefill
    handle = model.model.layers[1].register_forward_pre_hook(_FailOnce(1, RuntimeError("device lost")))
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            engine.step()
    finally:
        handle.remove()
    assert output.finished and output.error is not None and "device lost" in output.error
    assert all(s.finish_reason == "abort" for s in output.samples)
    # A new request runs normally on the same engine.
    out = engine.generate([list(range(3, 9))], params)[0]
    assert out.error is None and all(len(s.token_ids) == 5 for s in out.samples)


def test_a_prompt_that_cannot_be_encoded_is_named_by_its_index_and_nothing_is_queued():
    engine = _engine(helpers.tiny_model(0, eos_token_id=VOCAB - 1))
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        engine.generate([[1, 2, 3], "text without a tokenizer"], SamplingParams(max_tokens=2))
    assert not engine.has_unfinished()
