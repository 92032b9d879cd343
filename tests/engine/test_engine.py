"""The whole engine on a two-layer random model: exact against the cache-free reference, seeded sampling independent
of the batch, preemption invisible in the outputs, failures contained to their request, weights shared."""

from __future__ import annotations

import pytest
import torch

from tao_engine import ForwardBatch
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.reference_generate import generate_tokens
from tests import helpers
from tests.tolerances import check

VOCAB = 101


def tiny_model(seed: int = 0) -> torch.nn.Module:
    return helpers.tiny_model(seed, eos_token_id=VOCAB - 1)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 40, (count,), generator=g).tolist()
    return [torch.randint(0, VOCAB - 1, (n,), generator=g).tolist() for n in lengths]


def engine(model, **kw) -> Engine:
    return Engine(model, EngineConfig(**{"kv_cache_bytes": 4 * 2**20, "block_size": 4, **kw}))


def test_greedy_equals_cache_free_reference():
    model = tiny_model()
    ps = prompts(7)
    outs = engine(model, max_num_batched_tokens=32).generate(ps, SamplingParams(temperature=0, max_tokens=12))
    for p, out in zip(ps, outs, strict=True):
        expected = generate_tokens(model, p, 12, stop_ids={VOCAB - 1})
        assert out.samples[0].token_ids == expected
        assert out.samples[0].finish_reason == ("stop" if expected[-1] == VOCAB - 1 else "length")
        assert out.prompt_token_ids == p and out.finished


def test_logprobs_match_full_forward_for_every_sample():
    model = tiny_model()
    ps = prompts(3, seed=1)
    params = SamplingParams(n=4, temperature=0.8, top_p=0.95, max_tokens=10, seed=3, ignore_eos=True)
    outs = engine(model).generate(ps, params)
    for p, out in zip(ps, outs, strict=True):
        assert len(out.samples) == 4
        for sample in out.samples:
            ids = p + sample.token_ids
            with torch.no_grad():
                hidden = model(torch.tensor(ids), ForwardBatch.for_sequences([len(ids)]))
                logp = torch.log_softmax(model.compute_logits(hidden).double(), -1)
            ref = [logp[len(p) - 1 + i, t].item() for i, t in enumerate(sample.token_ids)]
            # The engine's paged steps and this whole-sequence forward: two fp32 computations of the same log-probs.
            check("sequence_logprobs", torch.tensor(sample.raw_logprobs), torch.tensor(ref, dtype=torch.float64),
                  model=model, prompts=[p], completions=[sample.token_ids])
            assert all(lp <= 0 for lp in sample.logprobs)
            assert sample.cumulative_logprob == pytest.approx(sum(sample.logprobs))


def test_seeded_samples_identical_alone_and_in_a_mixed_batch():
    model = tiny_model()
    target = prompts(1, seed=5)[0]
    params = SamplingParams(n=3, temperature=1.0, top_k=20, max_tokens=8, seed=11, ignore_eos=True)
    alone = engine(model).generate([target], params)[0]
    others = prompts(6, seed=6)
    mixed_params = [SamplingParams(n=2, temperature=0.7, max_tokens=5, seed=i) for i in range(3)] + [params] + [
        SamplingParams(temperature=0, max_tokens=9) for _ in range(3)]
    mixed = engine(model, max_num_batched_tokens=16).generate(others[:3] + [target] + others[3:], mixed_params)[3]
    assert [s.token_ids for s in alone.samples] == [s.token_ids for s in mixed.samples]
    assert len({tuple(s.token_ids) for s in alone.samples}) > 1  # the n samples differ from one another


def test_preemption_under_tiny_kv_budget_gives_identical_outputs():
    model = tiny_model()
    ps = prompts(6, seed=2)
    params = SamplingParams(n=3, temperature=0.9, max_tokens=20, seed=7, ignore_eos=True)
    roomy = engine(model).generate(ps, params)
    # 24 blocks of 4 tokens: far less than 18 sequences of up to 59 tokens need at once.
    tight_engine = Engine(model, EngineConfig(kv_cache_bytes=24 * _block_bytes(model, 4), block_size=4))
    tight = tight_engine.generate(ps, params)
    assert tight_engine.stats()["preemptions"] > 0
    for a, b in zip(roomy, tight, strict=True):
        assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    assert tight_engine.block_manager.num_free_blocks == 24  # free + evictable cached: nothing leaked


def _block_bytes(model, block_size: int) -> int:
    from tao_engine.engine.kv_allocation import kv_cache_bytes_per_block

    return kv_cache_bytes_per_block(model.config, block_size, torch.float32)


def test_too_long_prompt_fails_alone():
    model = tiny_model()
    ok = prompts(2)
    outs = engine(model, max_model_len=64).generate([ok[0], list(range(80)), ok[1]],
                                                     SamplingParams(temperature=0, max_tokens=4))
    assert outs[1].error is not None and "max_model_len" in outs[1].error
    assert outs[1].samples[0].finish_reason == "abort"
    assert outs[0].error is None and len(outs[0].samples[0].token_ids) >= 1
    assert outs[2].error is None and outs[2].finished


def test_prefix_cache_reuses_shared_prompt_blocks():
    model = tiny_model()
    system = prompts(1, seed=9)[0] * 2  # a long shared prefix
    eng = engine(model)
    first = eng.generate([system + [1, 2]], SamplingParams(temperature=0, max_tokens=3))[0]
    second = eng.generate([system + [3, 4, 5]], SamplingParams(temperature=0, max_tokens=3))[0]
    assert first.metrics.num_cached_prompt_tokens == 0
    assert second.metrics.num_cached_prompt_tokens >= (len(system) // 4) * 4 - 4
    assert second.samples[0].token_ids == generate_tokens(model, system + [3, 4, 5], 3, stop_ids={VOCAB - 1})


def test_engine_shares_the_module_with_the_trainer():
    model = tiny_model()
    eng = engine(model)
    p = prompts(1, seed=4)[0]
    before = eng.generate([p], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0].samples[0].token_ids
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # an in-place "optimizer step": the most likely token becomes the least
        model.model.layers[0].self_attn.v_proj.weight.mul_(0.5)  # ... and the prompt's keys/values change
    after = eng.generate([p], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0].samples[0].token_ids
    assert after[0] != before[0]
    # The prompt's cached KV was computed with the old weights: the engine must not reuse it.
    assert after == generate_tokens(model, p, 6)
    assert eng.model is model


def test_stream_yields_until_finished_and_abort():
    model = tiny_model()
    eng = engine(model)
    seen = 0
    final = None
    for out in eng.stream(prompts(2), SamplingParams(n=2, temperature=0.5, max_tokens=6, seed=0, ignore_eos=True)):
        seen += 1
        final = out
    assert seen >= 6 and final is not None and final.finished
    out = eng.add_request(prompts(1)[0], SamplingParams(max_tokens=50, ignore_eos=True))
    eng.step()
    assert eng.abort(out.request_id)
    assert out.finished and out.samples[0].finish_reason == "abort"
    assert not eng.has_unfinished()


def test_bad_input_is_a_clear_error():
    model = tiny_model()
    eng = engine(model)
    with pytest.raises(ValueError, match="tokenizer"):
        eng.generate("text needs a tokenizer")
    with pytest.raises(ValueError, match="one each"):
        eng.generate(prompts(3), [SamplingParams(), SamplingParams()])
    with pytest.raises(ValueError, match="EngineConfig.block_size"):
        EngineConfig(block_size=0)
    with pytest.raises(ValueError, match="unknown key"):
        EngineConfig.from_dict({"blocksize": 4})
    assert not eng.has_unfinished()
