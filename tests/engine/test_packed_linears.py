"""EngineConfig.pack_linears: an engine on the packed copy of the weights gives the tokens and log-probs of one on the
modules' weights, and follows the module when a trainer writes it in place or a load replaces its tensors."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tests import helpers
from tests.engine.same_generations import assert_same_generations

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]


def _generate(engine: Engine, seed: int):
    # max_tokens differ per prompt, so the decode batch shrinks from 9 to 3 sequences along the way
    params = [SamplingParams(n=3, temperature=0.9, max_tokens=m, seed=seed, ignore_eos=True) for m in (12, 5, 8)]
    return engine.generate(PROMPTS, params)


def _engine(model, pack: bool) -> Engine:
    return Engine(model, EngineConfig(kv_cache_bytes=2**22, block_size=4, pack_linears=pack))


def test_packed_engine_matches_and_follows_updates():
    model = helpers.tiny_model(0, eos_token_id=100)
    packed = _engine(model, True)
    linear_bytes = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert packed.stats()["packed_weight_bytes"] == linear_bytes  # one copy of every linear, the LM head included
    unpacked = _generate(_engine(model, False), seed=4)
    assert_same_generations(model, PROMPTS, unpacked, _generate(packed, seed=4), temperature=0.9)

    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)  # in place, as an optimizer step
    before = _generate(_engine(model, False), seed=5)
    assert_same_generations(model, PROMPTS, before, _generate(packed, seed=5), temperature=0.9)

    model.load_state_dict({k: v * 0.9 for k, v in model.state_dict().items()}, assign=True)  # replaced tensors
    after = _generate(_engine(model, False), seed=5)
    changed = [x.samples[0].token_ids != y.samples[0].token_ids for x, y in zip(before, after, strict=True)]
    assert any(changed)  # the load did change what the model generates
    assert_same_generations(model, PROMPTS, after, _generate(packed, seed=5), temperature=0.9)


def test_an_adapter_applied_after_the_engine_started_is_generated_with():
    # TAO builds the engine on the base model, then wraps projections in LoRA layers: the packed copy of the base
    # weights must step aside (the adapters' updates would never reach generation), and come back once the model is
    # plain again.
    from tao_engine.rl.lora import LoraConfig, apply_lora, lora_layers, merged_state_dict

    model = helpers.tiny_model(0, eos_token_id=100)
    engine = _engine(model, None)
    assert engine.runner.packed is not None and engine.runner.packed.active
    before = _generate(engine, seed=6)
    apply_lora(model, LoraConfig(r=2, target_modules=("q_proj", "down_proj")))
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))  # a trained adapter
    with_adapters = _generate(_engine(model, False), seed=6)
    assert any(x.samples[0].token_ids != y.samples[0].token_ids for x, y in zip(before, with_adapters, strict=True))
    # the bound's model: the same function without adapter modules (the adapters folded into plain weights)
    plain = helpers.tiny_model(0, eos_token_id=100)
    plain.load_state_dict(merged_state_dict(model, model.state_dict()))
    assert_same_generations(plain, PROMPTS, with_adapters, _generate(engine, seed=6), temperature=0.9)
    assert not engine.runner.packed.active and "LoraLinear" in engine.runner.packed.blocker
    assert engine.stats()["packed_weight_bytes"] == 0


def test_pack_linears_must_be_a_bool_or_none():
    with pytest.raises(ValueError, match="EngineConfig.pack_linears must be true, false or None"):
        EngineConfig(pack_linears="yes")
