"""EngineConfig(compile_decode=True): the decode forward through torch.compile (inductor) gives the eager engine's
tokens and log-probs, over batch sizes that change as samples finish, and a trainer's update reaches the compiled
forward (the same parameters: no recompile, no copy)."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tests import helpers
from tests.engine.same_generations import assert_same_generations

pytestmark = pytest.mark.slow  # inductor compiles C++ for the CPU: tens of seconds on 2 cores

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]


def _generate(model, compile_decode: bool, seed: int):
    config = EngineConfig(kv_cache_bytes=2**22, block_size=4, compile_decode=compile_decode)
    engine = Engine(model, config)
    # max_tokens differ per prompt, so the decode batch shrinks from 9 to 3 sequences along the way
    params = [SamplingParams(n=3, temperature=0.9, max_tokens=m, seed=seed, ignore_eos=True) for m in (12, 5, 8)]
    return engine, engine.generate(PROMPTS, params)


def test_compiled_decode_matches_eager_and_follows_updates():
    model = helpers.tiny_model(0, eos_token_id=100)
    _, eager = _generate(model, False, seed=4)
    engine, compiled = _generate(model, True, seed=4)
    assert_same_generations(model, PROMPTS, eager, compiled, temperature=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)  # an in-place update, as an optimizer step makes it
    _, eager_after = _generate(model, False, seed=5)
    params = [SamplingParams(n=3, temperature=0.9, max_tokens=m, seed=5, ignore_eos=True) for m in (12, 5, 8)]
    assert_same_generations(model, PROMPTS, eager_after, engine.generate(PROMPTS, params), temperature=0.9)
