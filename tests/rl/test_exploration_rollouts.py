"""Candidates -> Rollouts under the inference-time prompt: completion ids are the tokenized transformed response + EOS
(plain keeps its sampled ids, a failed candidate is empty), the old log-probs equal a direct forward of the current
policy, and the update runs on them with the collection-time ratio."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.to_rollouts import candidates_to_rollouts
from tao_engine.rl.rewards import comparable_sampler_logprobs
from tao_engine.rl.trainer import TrainConfig, train_step
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.error_bounds import assert_within_bound
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir
from tests.tolerances import bound, check

EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    return Tokenizer.from_dir(
        write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)
    )


def _reason(response: str | None, tokens: int = 9) -> Candidate:
    return Candidate("reason", "Think step by step: ...", f"long reasoning\nAnswer: {response}", response, tokens, 1.0)


def _candidates() -> tuple[list, list[list[Candidate]]]:
    prompts = ["What is 2+3?", [{"role": "user", "content": "Name a fruit."}]]
    groups = [
        [_reason("5"), _reason("five apples"), _reason(None, tokens=4)],
        [Candidate("plain", prompts[1], "kiwi", "kiwi", 3, 0.7, response_token_ids=(70, 71, EOS)),
         _reason("Banana, of course."), _reason("é😀")],
    ]
    return prompts, groups


def _direct_logprobs(model, prompt_ids: list[int], completion: list[int]) -> torch.Tensor:
    """log p(completion token | inference prompt, earlier tokens) from one plain forward, in fp64."""
    ids = torch.tensor([prompt_ids + completion])
    logp = torch.log_softmax(model.forward_padded(ids).double()[0], dim=-1)  # [T, V]
    start = len(prompt_ids) - 1
    return logp[start : start + len(completion)].gather(1, torch.tensor(completion)[:, None])[:, 0]


def test_completion_ids_and_old_logprobs_are_those_of_the_inference_time_prompt(tokenizer):
    model = helpers.tiny_model(seed=2, vocab_size=tokenizer.vocab_size, eos_token_id=EOS)
    prompts, groups = _candidates()
    sampling = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_tokens=32)
    ro = candidates_to_rollouts(model, tokenizer, EOS, prompts, groups, sampling, seconds=1.5)
    rendered = tokenizer.apply_chat_template(prompts[1], add_generation_prompt=True, tokenize=False)
    assert ro.prompt_texts == ["What is 2+3?", rendered]  # the inference-time prompts, never the exploration ones
    assert ro.prompt_token_ids[0] == tokenizer.encode("What is 2+3?")
    assert ro.completion_token_ids[0][0] == tokenizer.encode("5", add_special_tokens=False) + [EOS]
    assert ro.completion_token_ids[0][1] == tokenizer.encode("five apples", add_special_tokens=False) + [EOS]
    assert ro.completion_token_ids[0][2] == []  # transform failed: nothing to train
    assert ro.completion_token_ids[1][0] == [70, 71, EOS]  # plain: the sampled ids as they are
    assert ro.completion_texts[0] == ["5", "five apples", ""]
    assert (ro.n, ro.sampling.temperature, ro.sampling.top_p, ro.sampling.max_tokens) == (3, 1.0, 1.0, 32)
    assert ro.timing.num_completion_tokens == 9 + 9 + 4 + 3 + 9 + 9  # what exploring cost, not the responses
    assert ro.sampler_logprobs == ro.raw_logprobs
    for g, group in enumerate(ro.completion_token_ids):
        for j, completion in enumerate(group):
            got = torch.tensor(ro.sampler_logprobs[g][j], dtype=torch.float64)
            assert got.shape == (len(completion),)
            if completion:
                check("sequence_logprobs", got.float(), _direct_logprobs(model, ro.prompt_token_ids[g], completion),
                      model=model, prompts=[ro.prompt_token_ids[g]], completions=[completion])


def test_unequal_groups_are_an_error(tokenizer):
    model = helpers.tiny_model(seed=2, vocab_size=tokenizer.vocab_size, eos_token_id=EOS)
    with pytest.raises(ValueError, match="equal size"):
        candidates_to_rollouts(model, tokenizer, EOS, ["a", "b"], [[_reason("1")], [_reason("1"), _reason("2")]],
                               SamplingParams())


def _update(tokenizer, algo: AlgorithmConfig, model: torch.nn.Module | None = None):
    torch.manual_seed(0)
    if model is None:
        model = helpers.tiny_model(seed=2, vocab_size=tokenizer.vocab_size, eos_token_id=EOS)
    model.train()
    prompts, groups = _candidates()
    ro = candidates_to_rollouts(model, tokenizer, EOS, prompts, groups, SamplingParams(n=3, max_tokens=32))
    ro.rewards = [[1.0, 0.0, None], [0.0, 1.0, 0.5]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    stats = train_step(model, ro, optimizer, TrainConfig(algorithm=algo, max_tokens_per_forward=256))
    return model, ro, stats


def test_first_update_on_explored_candidates_starts_at_ratio_one(tokenizer):
    before = helpers.tiny_model(seed=2, vocab_size=tokenizer.vocab_size, eos_token_id=EOS)
    model, ro, stats = _update(tokenizer, AlgorithmConfig(name="grpo", old_logprobs="sampler"))
    assert comparable_sampler_logprobs(ro, 1.0) is not None  # old_logprobs="sampler" is allowed
    metrics = stats.as_dict()
    # Collection-time log-probs = the policy's own before the update: two fp32 forwards of the same tokens, so
    # every token's gap (and so the mean gap, and |ratio - 1| to first order) is within their derived bound.
    prompts = [p for p, cs in zip(ro.prompt_token_ids, ro.completion_token_ids, strict=True) for _ in cs]
    completions = [c for cs in ro.completion_token_ids for c in cs]
    limit = bound("sequence_logprobs", model=before, prompts=prompts, completions=completions).max()
    assert_within_bound(torch.tensor(metrics["sampler_trainer_gap"]), torch.tensor(0.0, dtype=torch.float64), limit,
                        "sampler_trainer_gap")
    assert_within_bound(torch.tensor(metrics["ratio_mean"]), torch.tensor(1.0, dtype=torch.float64),
                        torch.expm1(limit) + 2 * torch.finfo(torch.float32).eps, "ratio_mean")
    assert metrics["clip_fraction"] == 0.0
    assert stats.optimizer_steps == 1
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters(), strict=True))


@pytest.fixture(scope="module")
def ppo_runs(tokenizer):
    return {mode: _update(tokenizer, AlgorithmConfig(name="ppo", old_logprobs=mode)) for mode in ("trainer", "sampler")}


def test_ppo_old_logprobs_from_collection_time_equal_recomputed_ones(ppo_runs, tokenizer):
    """2 epochs x 2 minibatches: later minibatches see a ratio away from 1, clipped. Taking the old log-probs from
    collection time ("sampler") or recomputing them before the update ("trainer") gives the same update."""
    (model_t, _, stats_t), (model_s, _, stats_s) = ppo_runs["trainer"], ppo_runs["sampler"]
    assert stats_t.optimizer_steps == stats_s.optimizer_steps == 4
    assert stats_s.as_dict()["clip_fraction"] > 0 and stats_s.as_dict()["ratio_mean"] != 1.0  # the ratio moved
    # Two fp32 runs of the same update: within the forward's and backward's rounding through the four steps.
    names = [name for name, _ in model_t.named_parameters()]

    def weights(m) -> torch.Tensor:
        _update(tokenizer, AlgorithmConfig(name="ppo", old_logprobs="trainer"), model=m)
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    start = helpers.tiny_model(seed=2, vocab_size=tokenizer.vocab_size, eos_token_id=EOS)
    sizes = [p.numel() for p in model_t.parameters()]
    limits = bound("model_outputs", model=start, outputs=weights, grad=True).split(sizes)
    for name, a, b, limit in zip(names, model_t.parameters(), model_s.parameters(), limits, strict=True):
        # plus each run's rounding of w - lr g at its four updates
        limit = limit.view_as(a) + 8 * torch.finfo(torch.float32).eps / 2 * a.detach().double().abs()
        assert_within_bound(b.detach(), a.detach().double(), limit, name)
