"""SamplingParams: defaults, normalization, validation errors that name the field and its range; seed helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tao_engine.engine.sampling_params import SamplingParams, resolve_seed, sample_seed


def test_defaults():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_k, p.top_p, p.min_p) == (1, 1.0, 0, 1.0, 0.0)
    assert (p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (p.max_tokens, p.min_tokens, p.stop, p.stop_token_ids) == (16, 0, (), ())
    assert (p.ignore_eos, p.seed, p.logprobs, p.skip_special_tokens, p.include_stop_str_in_output) == (
        False,
        None,
        True,
        True,
        False,
    )
    assert not p.greedy and not p.uses_penalties
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 0.5  # type: ignore[misc]


def test_normalization():
    assert SamplingParams(stop="###").stop == ("###",)
    assert SamplingParams(stop=["a", "bc"]).stop == ("a", "bc")
    assert SamplingParams(stop_token_ids=[3, 7]).stop_token_ids == (3, 7)
    p = SamplingParams(temperature=0, top_p=1, repetition_penalty=2)
    assert isinstance(p.temperature, float) and p.greedy
    assert p.uses_penalties and isinstance(p.repetition_penalty, float)
    assert SamplingParams(frequency_penalty=0.5).uses_penalties
    assert SamplingParams(top_k=-1).top_k == -1
    assert hash(SamplingParams(stop=["x"])) == hash(SamplingParams(stop=("x",)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"n must be >= 1"),
        ({"temperature": -0.5}, r"temperature must be 0 \(greedy\) or >= 0.001"),
        ({"temperature": 1e-5}, r"temperature must be 0 \(greedy\) or >= 0.001"),
        ({"temperature": float("nan")}, r"temperature must be finite"),
        ({"top_k": -2}, r"top_k must be >= 1, or 0 / -1"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"min_p": -0.1}, r"min_p must be in \[0, 1\]"),
        ({"min_p": 1.1}, r"min_p must be in \[0, 1\]"),
        ({"repetition_penalty": 0.0}, r"repetition_penalty must be > 0"),
        ({"presence_penalty": 2.5}, r"presence_penalty must be in \[-2.0, 2.0\]"),
        ({"frequency_penalty": -3.0}, r"frequency_penalty must be in \[-2.0, 2.0\]"),
        ({"max_tokens": 0}, r"max_tokens must be >= 1"),
        ({"min_tokens": 5, "max_tokens": 4}, r"min_tokens must be in \[0, max_tokens=4\]"),
        ({"min_tokens": -1}, r"min_tokens must be in \[0, max_tokens=16\]"),
        ({"stop": ["ok", ""]}, r"stop must hold non-empty strings"),
        ({"stop_token_ids": [1, -3]}, r"stop_token_ids must hold token ids >= 0"),
        ({"seed": 2**64}, r"seed must fit in 64 bits"),
    ],
)
def test_invalid_values_name_field_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2.0}, r"n must be an int"),
        ({"top_k": True}, r"top_k must be an int"),
        ({"temperature": "hot"}, r"temperature must be a number"),
        ({"ignore_eos": 1}, r"ignore_eos must be a bool"),
        ({"logprobs": 5}, r"logprobs must be a bool"),
        ({"seed": 1.5}, r"seed must be an int"),
        ({"stop_token_ids": 7}, r"stop_token_ids must be a list of ints"),
    ],
)
def test_wrong_types_name_field(kwargs, message):
    with pytest.raises(TypeError, match=message):
        SamplingParams(**kwargs)


def test_from_dict():
    p = SamplingParams.from_dict({"temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"], "seed": 3})
    assert p == SamplingParams(temperature=0.7, top_p=0.9, stop=("\n\n",), seed=3)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_new_tokens', 'topk'\]; valid keys are"):
        SamplingParams.from_dict({"topk": 5, "max_new_tokens": 3, "top_p": 0.5})
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams.from_dict({"top_p": 2})


def test_resolve_seed_uses_params_seed_else_the_engines_generator():
    assert resolve_seed(SamplingParams(seed=77), torch.Generator().manual_seed(0)) == 77
    a = [resolve_seed(SamplingParams(), torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0] == a[1], "the same engine generator state must give the same seed"
    gen = torch.Generator().manual_seed(5)
    drawn = [resolve_seed(SamplingParams(), gen) for _ in range(20)]
    assert drawn[0] == a[0] and len(set(drawn)) == 20


def test_sample_seed_is_a_stable_int64_and_does_not_collide():
    seeds = {(s, i): sample_seed(s, i) for s in range(-50, 50) for i in range(20)}
    assert len(set(seeds.values())) == len(seeds), "(seed, index) pairs must map to distinct sample seeds"
    assert all(-(2**63) <= v < 2**63 for v in seeds.values())
    assert sample_seed(2**64 - 1, 3) == sample_seed(-1, 3)  # seeds are taken modulo 2**64
    assert sample_seed(12345, 2) == sample_seed(12345, 2)
    with pytest.raises(ValueError, match="index must be >= 0"):
        sample_seed(1, -1)
