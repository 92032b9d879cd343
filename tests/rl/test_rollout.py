"""rollout() on a tiny model engine: shapes and flat/padded views, ids and log-probs equal the engine's own outputs
and the trainer-side completion_logprobs, failed prompts named or skipped, and an in-place optimizer step on the
shared module changes the very next rollout (no weight copy)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl import RolloutError, Rollouts, SkippedPrompt, completion_logprobs, rollout
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir
from tests.tolerances import check

VOCAB = 101
EOS = VOCAB - 1


def _model(seed: int = 0) -> torch.nn.Module:
    return helpers.tiny_model(seed, eos_token_id=EOS)


def _engine(model, **kw) -> Engine:
    return Engine(model, EngineConfig(**{"kv_cache_bytes": 4 * 2**20, "block_size": 4, **kw}))


def _prompts(lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, EOS, (n,), generator=g).tolist() for n in lengths]


def test_shapes_views_and_ids_equal_the_engine_outputs():
    model = _model()
    prompts = _prompts([5, 12, 3])
    params = SamplingParams(n=3, temperature=0.9, max_tokens=9, seed=5)
    ro = rollout(_engine(model), prompts, params)
    outs = _engine(model).generate(prompts, params)
    assert isinstance(ro, Rollouts)
    assert (ro.num_prompts, ro.n, ro.num_completions) == (3, 3, 9)
    assert ro.prompts == prompts and ro.prompt_token_ids == prompts and ro.prompt_texts == [None] * 3
    assert ro.prompt_indices == [0, 1, 2] and ro.skipped == [] and ro.sampling == params
    for g, out in enumerate(outs):
        assert ro.completion_token_ids[g] == [s.token_ids for s in out.samples]
        assert ro.sampler_logprobs[g] == [s.logprobs for s in out.samples]
        assert ro.raw_logprobs[g] == [s.raw_logprobs for s in out.samples]
        assert ro.finish_reasons[g] == [s.finish_reason for s in out.samples]
    lengths = [len(c) for c in ro.flat_completion_token_ids()]
    assert len(set(lengths)) > 1, "the test needs completions of different lengths (some stop at EOS)"
    assert ro.group_index() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ro.flat_prompt_token_ids() == [p for p in prompts for _ in range(3)]
    assert ro.flat_finish_reasons() == [s for r in ro.finish_reasons for s in r]
    assert set(ro.flat_finish_reasons()) <= {"stop", "length"}
    assert ro.completion_lengths().tolist() == lengths
    mask = ro.completion_mask()
    assert mask.shape == (9, max(lengths)) and mask.sum(1).tolist() == lengths
    ids = ro.padded_completion_ids(pad_id=-1)
    assert [row[row >= 0].tolist() for row in ids] == ro.flat_completion_token_ids()
    assert (ids[mask] >= 0).all() and (ids[~mask] == -1).all()
    sampler = ro.padded_sampler_logprobs()
    assert sampler.dtype == torch.float32 and (sampler[~mask] == 0).all() and (sampler[mask] <= 0).all()
    assert ro.padded_raw_logprobs()[mask].tolist() == pytest.approx([x for r in ro.raw_logprobs for c in r for x in c])
    assert ro.timing.num_completion_tokens == sum(lengths) and ro.timing.num_prompt_tokens == 20
    assert ro.timing.seconds > 0 and ro.timing.completion_tokens_per_second > 0


def _check_logprobs(engine_side: torch.Tensor, trainer_side: torch.Tensor, model, ro, temperature: float) -> None:
    """[B, T] log-probs of the engine's samples against the trainer's forward of the same tokens: two fp32 paths,
    within the whole-model bound of a forward of each sequence (tests/tolerances.py, sequence_logprobs)."""
    mask = ro.completion_mask()
    prompts = [p for p, cs in zip(ro.prompt_token_ids, ro.completion_token_ids, strict=True) for _ in cs]
    completions = [c for cs in ro.completion_token_ids for c in cs]
    check("sequence_logprobs", engine_side[mask], trainer_side[mask].double(), model=model, prompts=prompts,
          completions=completions, temperature=temperature)


def test_log_probs_equal_the_trainer_side_computation():
    model = _model(seed=1)
    prompts = _prompts([7, 2], seed=1)
    params = SamplingParams(n=4, temperature=0.7, max_tokens=8, seed=2, ignore_eos=True)
    ro = rollout(_engine(model), prompts, params)
    mask = ro.completion_mask()
    with torch.no_grad():
        sampled = completion_logprobs(model, ro.prompt_token_ids, ro.completion_token_ids, temperature=0.7)
        raw = completion_logprobs(model, ro.prompt_token_ids, ro.completion_token_ids, temperature=1.0)
    assert torch.equal(sampled.mask, mask)
    # No top-k/top-p/penalties: the sampled distribution is softmax(logits / T).
    _check_logprobs(ro.padded_sampler_logprobs(), sampled.logprobs, model, ro, 0.7)
    _check_logprobs(ro.padded_raw_logprobs(), raw.logprobs, model, ro, 1.0)


def test_an_optimizer_step_on_the_shared_module_changes_the_next_rollout():
    model = _model(seed=2)
    engine = _engine(model)
    prompts = _prompts([6, 9], seed=3)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=9, ignore_eos=True)
    before = rollout(engine, prompts, params)
    again = rollout(engine, prompts, params)  # same seed, same weights (prompt KV now from the prefix cache)
    assert again.completion_token_ids == before.completion_token_ids
    _check_logprobs(again.padded_raw_logprobs(), before.padded_raw_logprobs(), model, before, 1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lp = completion_logprobs(model, before.prompt_token_ids, before.completion_token_ids)
    (-lp.logprobs.sum()).backward()
    optimizer.step()  # in place, on the very module the engine holds
    after = rollout(engine, prompts, params)
    first_before = [s[0] for g in before.raw_logprobs for s in g]
    first_after = [s[0] for g in after.raw_logprobs for s in g]
    assert all(abs(a - b) > 1e-3 for a, b in zip(first_after, first_before, strict=True))
    with torch.no_grad():
        now = completion_logprobs(model, after.prompt_token_ids, after.completion_token_ids)
    _check_logprobs(after.padded_raw_logprobs(), now.logprobs, model, after, 1.0)


def test_a_failed_prompt_is_named_or_skipped_and_reported():
    model = _model()
    prompts = _prompts([4, 40, 6], seed=4)
    params = SamplingParams(n=2, max_tokens=4, seed=1)
    with pytest.raises(RolloutError, match=r"prompts\[1\] \(40 tokens\) failed"):
        rollout(_engine(model, max_model_len=32), prompts, params)
    ro = rollout(_engine(model, max_model_len=32), prompts, params, skip_failed=True)
    assert ro.prompt_indices == [0, 2] and ro.prompts == [prompts[0], prompts[2]]
    assert ro.num_prompts == 2 and len(ro.completion_token_ids) == 2
    assert len(ro.skipped) == 1 and isinstance(ro.skipped[0], SkippedPrompt) and ro.skipped[0].index == 1
    assert ro.skipped[0].error
    none_left = rollout(_engine(model, max_model_len=32), [prompts[1]], params, skip_failed=True)
    assert none_left.num_prompts == 0 and none_left.completion_mask().shape == (0, 0)


def test_bad_arguments_are_named():
    engine = _engine(_model())
    with pytest.raises(ValueError, match=r"prompts\[1\]: a text prompt needs a tokenizer"):
        rollout(engine, [[1, 2], "text"], SamplingParams())
    with pytest.raises(TypeError, match="sampling must be SamplingParams"):
        rollout(engine, [[1, 2]], {"n": 2})


def test_logprobs_are_always_returned():
    ro = rollout(_engine(_model()), [[3, 4, 5]], SamplingParams(n=2, max_tokens=3, logprobs=False, seed=0))
    assert ro.sampling.logprobs
    assert [len(x) for x in ro.sampler_logprobs[0]] == [len(c) for c in ro.completion_token_ids[0]]


def test_chat_prompts_keep_the_rendered_text_and_decoded_completions(tmp_path):
    backend = train_byte_level_bpe(CHATML_SPECIALS)
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tokenizer = Tokenizer.from_dir(write_tokenizer_dir(tmp_path / "tok", backend, config))
    model = helpers.tiny_model(seed=4, vocab_size=tokenizer.vocab_size, eos_token_id=2)
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4), tokenizer=tokenizer)
    chat = [{"role": "user", "content": "Say hello"}]
    params = SamplingParams(n=2, max_tokens=5, seed=3)
    ro = rollout(engine, [chat, "plain text"], params)
    rendered = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert ro.prompts == [chat, "plain text"]
    assert ro.prompt_texts == [rendered, "plain text"]
    assert ro.prompt_token_ids[0] == tokenizer.encode(rendered, add_special_tokens=False)
    outs = engine.generate([chat, "plain text"], params)
    assert ro.completion_token_ids == [[s.token_ids for s in o.samples] for o in outs]
    assert ro.completion_texts == [[s.text for s in o.samples] for o in outs]
    assert any(text for text in ro.flat_completion_texts())


def test_put_scores_puts_each_scored_part_back_in_its_rows():
    ro = rollout(_engine(_model()), _prompts([4, 6, 5]), SamplingParams(n=2, max_tokens=3, seed=1))
    voted = dataclasses.replace(ro.select([2, 0]), rewards=[[1.0, 0.0], [0.5, None]], answers=[["x", "y"], ["x", None]],
                                scorer_rewards=[{"a": [1.0, 0.0]}, {"a": [0.5, None]}])
    unvoted = dataclasses.replace(ro.select([1]), rewards=[[0.2, 0.3]], scorer_rewards=[{"b": [0.2, 0.3]}])
    out = ro.put_scores([([2, 0], voted), ([1], unvoted)])
    assert out.rewards == [[0.5, None], [0.2, 0.3], [1.0, 0.0]]
    assert out.scorer_rewards == [{"a": [0.5, None]}, {"b": [0.2, 0.3]}, {"a": [1.0, 0.0]}]
    assert out.answers == [["x", None], [None, None], ["x", "y"]]  # a part without answer keys: none in its rows
    assert out.advantage_scale is None and out.completion_token_ids == ro.completion_token_ids
