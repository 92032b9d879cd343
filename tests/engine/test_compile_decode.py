"""EngineConfig(compile_decode=True): the decode forward through torch.compile (inductor) gives the eager engine's
tokens and log-probs, over batch sizes that change as samples finish, and a trainer's update reaches the compiled
forward (the same parameters: no recompile, no copy)."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tests import helpers
from tests.tolerances import check

pytestmark = pytest.mark.slow  # inductor compiles C++ for the CPU: tens of seconds on 2 cores

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]


def _generate(model, compile_decode: bool, seed: int):
    config = EngineConfig(kv_cache_bytes=2**22, block_size=4, compile_decode=compile_decode)
    engine = Engine(model, config)
    # max_tokens differ per prompt, so the decode batch shrinks from 9 to 3 sequences along the way
    params = [SamplingParams(n=3, temperature=0.9, max_tokens=m, seed=seed, ignore_eos=True) for m in (12, 5, 8)]
    return engine, engine.generate(PROMPTS, params)


def _same(model, a, b) -> None:
    """The same tokens, and log-probs within the bound of two fp32 computations of them (inductor's kernels sum in
    another order than eager's)."""
    for prompt, x, y in zip(PROMPTS, a, b, strict=True):
        for s1, s2 in zip(x.samples, y.samples, strict=True):
            assert s1.token_ids == s2.token_ids
        completions = [s.token_ids for s in x.samples]
        check("sequence_logprobs", torch.tensor([v for s in y.samples for v in s.logprobs]),
              torch.tensor([v for s in x.samples for v in s.logprobs], dtype=torch.float64), model=model,
              prompts=[prompt] * len(completions), completions=completions, temperature=0.9)


def test_compiled_decode_matches_eager_and_follows_updates():
    model = helpers.tiny_model(0, eos_token_id=100)
    _, eager = _generate(model, False, seed=4)
    engine, compiled = _generate(model, True, seed=4)
    _same(model, eager, compiled)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)  # an in-place update, as an optimizer step makes it
    _, eager_after = _generate(model, False, seed=5)
    params = [SamplingParams(n=3, temperature=0.9, max_tokens=m, seed=5, ignore_eos=True) for m in (12, 5, 8)]
    _same(model, eager_after, engine.generate(PROMPTS, params))
