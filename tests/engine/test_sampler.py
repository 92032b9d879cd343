"""Sampler: penalties against plain per-token math (vLLM's definitions), min_tokens blocking, raw log-probs of the
untouched logits, and agreement with the `sample` op when nothing needs processing."""

from __future__ import annotations

import math

import pytest
import torch

from tao_engine import ops
from tao_engine.engine.sampler import Sampler
from tao_engine.engine.sampling_params import SamplingParams
from tests.tolerances import check

EOS = 5


def _op_args(params: list[SamplingParams], seeds: list[int], steps: list[int]) -> tuple[torch.Tensor, ...]:
    return (
        torch.tensor([p.temperature for p in params]),
        torch.tensor([p.top_k for p in params]),
        torch.tensor([p.top_p for p in params]),
        torch.tensor([p.min_p for p in params]),
        torch.tensor(seeds),
        torch.tensor(steps),
    )


def _penalized_reference(logits: torch.Tensor, params, prompts, outputs) -> torch.Tensor:
    """Penalties one token at a time, in fp64: repetition over prompt + output, then frequency and presence over
    the output only."""
    out = logits.double().clone()
    for row, p in enumerate(params):
        for token in range(logits.shape[1]):
            value = float(out[row, token])
            if token in prompts[row] or token in outputs[row]:
                value = value / p.repetition_penalty if value > 0 else value * p.repetition_penalty
            count = outputs[row].count(token)
            value -= p.frequency_penalty * count
            if count > 0:
                value -= p.presence_penalty
            out[row, token] = value
    return out


def _raw_reference(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), dim=-1).gather(1, tokens[:, None]).squeeze(1)


def test_without_processing_it_is_the_sample_op():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 211, generator=gen) * 2
    params = [
        SamplingParams(temperature=0.8, top_k=20),
        SamplingParams(temperature=0),
        SamplingParams(top_p=0.7),
        SamplingParams(min_p=0.1),
        SamplingParams(),
        SamplingParams(temperature=1.4, top_k=3, top_p=0.9),
    ]
    seeds = [11, 22, -33, 44, 55, 66]
    outputs = [[1, 2], [], [7, 7, 7], [3], [], [9]]
    got = Sampler(eos_token_ids=[EOS], backend="torch")(logits, params, seeds, outputs)
    want = ops.sample(logits, *_op_args(params, seeds, [len(o) for o in outputs]), backend="torch")
    for a, b in zip((got.tokens, got.logprobs, got.raw_logprobs), want, strict=True):
        assert torch.equal(a, b)
    check("token_logprobs", got.raw_logprobs, _raw_reference(logits, got.tokens), logits=logits, targets=got.tokens)


def test_penalties_match_plain_math():
    gen = torch.Generator().manual_seed(1)
    rows, vocab = 6, 37
    logits = torch.randn(rows, vocab, generator=gen) * 3  # both signs, so both repetition branches run
    params = [
        SamplingParams(repetition_penalty=1.3),
        SamplingParams(repetition_penalty=0.7, temperature=0.9),
        SamplingParams(frequency_penalty=0.6, presence_penalty=-0.4),
        SamplingParams(),  # no penalty, in the same batch
        SamplingParams(repetition_penalty=1.8, frequency_penalty=-1.1, presence_penalty=1.5, temperature=0.6),
        SamplingParams(temperature=0, presence_penalty=2.0, frequency_penalty=2.0),
    ]
    prompts = [[0, 1, 2, 3, 30], [4, 4, 36], [5, 6], [1, 2, 3], [8, 9, 10, 11], [12]]
    outputs = [[3, 20, 20], [36, 2], [7, 7, 7, 8, 0], [1, 1], [9, 13, 13, 13, 14], [int(logits[5].argmax())] * 2]
    seeds, steps = [101, 202, 303, 404, 505, 606], [3, 9, 4, 0, 12, 2]
    got = Sampler(eos_token_ids=[EOS], backend="torch")(logits, params, seeds, outputs, prompts, steps)

    penalized = _penalized_reference(logits, params, prompts, outputs)
    # The penalized logits are what the sample op must see: same tokens and log-probs as feeding it directly.
    want = ops.sample(penalized.float(), *_op_args(params, seeds, steps), backend="torch")
    assert torch.equal(got.tokens, want[0])
    # The sampler penalizes in fp32, the reference in fp64 then rounds: two fp32 computations of the same log-probs.
    temperatures = torch.tensor([p.temperature for p in params])
    inputs = dict(logits=penalized, tokens=got.tokens, temperature=temperatures)
    check("sample_logprobs", got.logprobs, want[1], implementations=2, **inputs)
    # No filters here, so the log-prob is log_softmax(penalized / T) at the token (a point mass for greedy).
    expected = [0.0 if p.greedy else float(torch.log_softmax(penalized[row] / p.temperature, dim=0)[got.tokens[row]])
                for row, p in enumerate(params)]
    check("sample_logprobs", got.logprobs, torch.tensor(expected, dtype=torch.float64), **inputs)
    assert int(got.tokens[5]) != int(logits[5].argmax()), "the penalized greedy row must move off its old argmax"
    # Raw log-probs are of the logits before any penalty.
    check("token_logprobs", got.raw_logprobs, _raw_reference(logits, got.tokens), logits=logits, targets=got.tokens)


def test_repetition_penalty_needs_prompt_ids():
    logits = torch.randn(2, 10)
    params = [SamplingParams(), SamplingParams(repetition_penalty=1.2)]
    with pytest.raises(ValueError, match="prompt_ids are required"):
        Sampler()(logits, params, [1, 2], [[1], [2]])
    # frequency/presence use the output only: no prompt ids needed
    Sampler()(logits, [SamplingParams(), SamplingParams(presence_penalty=1.0)], [1, 2], [[1], [2]])


def test_min_tokens_blocks_eos_and_stop_ids_until_reached():
    vocab = 12
    logits = torch.zeros(5, vocab)
    logits[:, EOS] = 30.0  # EOS dominates...
    logits[:, 9] = 25.0  # ... then stop id 9
    logits[:, 2] = 20.0
    params = [
        SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[9]),  # under min_tokens: 2 (EOS, 9 blocked)
        SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[9]),  # reached: EOS allowed again
        SamplingParams(temperature=0, min_tokens=3, stop_token_ids=[9], ignore_eos=True),  # EOS not a stop: 5
        SamplingParams(temperature=1.0, min_tokens=4),  # sampled row: EOS blocked, 9 then wins nearly always
        SamplingParams(temperature=0),  # no min_tokens: EOS
    ]
    outputs = [[1, 1], [1, 1, 1], [], [0], [1]]
    got = Sampler(eos_token_ids=[EOS], backend="torch")(logits, params, [1, 2, 3, 4, 5], outputs)
    assert got.tokens.tolist() == [2, EOS, EOS, 9, EOS]
    blocked = logits[3:4].clone()
    blocked[0, EOS] = -math.inf  # what row 3 samples from under min_tokens
    check("sample_logprobs", got.logprobs[3:4], torch.tensor([-math.log1p(math.exp(-5) + 10 * math.exp(-25))]),
          logits=blocked, tokens=got.tokens[3:4])
    check("token_logprobs", got.raw_logprobs, _raw_reference(logits, got.tokens), logits=logits, targets=got.tokens)

    # Many draws of a sampled row under min_tokens: EOS and stop ids never come out.
    draws = 3000
    flat = torch.zeros(draws, vocab)
    params = [SamplingParams(min_tokens=2, stop_token_ids=[0, 11])] * draws
    got = Sampler(eos_token_ids=[EOS, 7])(flat, params, list(range(draws)), [[3]] * draws)
    drawn = set(got.tokens.tolist())
    assert drawn.isdisjoint({0, 11, EOS, 7}) and len(drawn) == vocab - 4


def test_same_seed_and_step_same_token_with_penalties_whatever_the_batch():
    gen = torch.Generator().manual_seed(4)
    vocab = 64
    row_logits = torch.randn(vocab, generator=gen)
    row = (SamplingParams(repetition_penalty=1.5, frequency_penalty=0.3, top_p=0.9), 999, [1, 2, 3], [4, 4, 5])
    sampler = Sampler(eos_token_ids=[EOS])
    alone = sampler(row_logits[None], [row[0]], [row[1]], [row[3]], [row[2]])
    logits = torch.randn(4, vocab, generator=gen)
    logits[2] = row_logits
    params = [SamplingParams(), SamplingParams(presence_penalty=1.0), row[0], SamplingParams(temperature=0)]
    mixed = sampler(logits, params, [1, 2, row[1], 4], [[], [6], row[3], [7, 8]], [[0], [1], row[2], [2]])
    assert int(mixed.tokens[2]) == int(alone.tokens[0])
    assert float(mixed.logprobs[2]) == float(alone.logprobs[0])


def test_low_precision_logits_are_sampled_in_fp32():
    logits = torch.randn(3, 50).to(torch.bfloat16)
    got = Sampler()(logits, [SamplingParams(temperature=0)] * 3, [1, 2, 3], [[], [], []])
    assert got.tokens.tolist() == logits.float().argmax(dim=-1).tolist()
    assert got.logprobs.dtype == torch.float32 and got.raw_logprobs.dtype == torch.float32


def test_bad_calls_are_explained():
    sampler = Sampler(eos_token_ids=[EOS])
    logits = torch.randn(2, 10)
    with pytest.raises(ValueError, match="seeds has 1 entries but logits have 2 rows"):
        sampler(logits, [SamplingParams()] * 2, [1], [[], []])
    with pytest.raises(ValueError, match="output_ids has 3 entries"):
        sampler(logits, [SamplingParams()] * 2, [1, 2], [[], [], []])
    with pytest.raises(ValueError, match=r"output_ids hold ids outside \[0, 10\)"):
        sampler(logits, [SamplingParams(frequency_penalty=1.0)] * 2, [1, 2], [[3], [10]])
    with pytest.raises(ValueError, match=r"stop_token_ids / eos_token_ids hold ids outside \[0, 10\)"):
        sampler(logits, [SamplingParams(min_tokens=1, stop_token_ids=[12])] * 2, [1, 2], [[], []])
    with pytest.raises(ValueError, match="logits must be a float"):
        sampler(torch.randn(10), [SamplingParams()], [1], [[]])
