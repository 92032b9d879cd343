"""The guards' advantage scale reaches the gradient: train_step multiplies it into the advantages, so on the first
(on-policy, unclipped) step the update is linear in it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.trainer import TrainConfig, train_step
from tests import helpers
from tests.tolerances import check

PROMPTS = [[3, 14, 15, 92], [65, 35], [89, 79, 32, 38, 46]]


def _batch():
    model = helpers.tiny_model(0, eos_token_id=100).train()
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=4))
    ro = rollout(engine, PROMPTS, SamplingParams(n=4, temperature=1.0, max_tokens=5, ignore_eos=True, seed=11))
    rewards = torch.rand(ro.num_prompts, ro.n, generator=torch.Generator().manual_seed(5)).tolist()
    return dataclasses.replace(ro, rewards=rewards)


WEIGHTS = {k: v.detach() for k, v in helpers.tiny_model(0, eos_token_id=100).named_parameters()}


def _update(batch, scale) -> dict[str, torch.Tensor]:
    """Parameter deltas of one SGD step (lr 1, no clipping) on a fresh copy of the same model (WEIGHTS)."""
    model = helpers.tiny_model(0, eos_token_id=100).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_step(model, dataclasses.replace(batch, advantage_scale=scale), optimizer,
               TrainConfig(max_grad_norm=None, max_tokens_per_forward=10_000))
    return {k: v.detach() - before[k] for k, v in model.named_parameters()}


def test_the_update_is_linear_in_the_advantage_scale():
    batch = _batch()
    ones = [[1.0] * 4 for _ in PROMPTS]
    plain = _update(batch, None)
    unit = _update(batch, ones)
    first = _update(batch, [[1.0] * 4, [0.0] * 4, [0.0] * 4])
    rest = _update(batch, [[0.0] * 4, [1.0] * 4, [1.0] * 4])
    halved = _update(batch, [[0.5] * 4 for _ in PROMPTS])
    tokens = sum(len(c) for group in batch.completion_token_ids for c in group)
    for name, delta in plain.items():
        assert delta.abs().max() > 0, name
        assert torch.equal(unit[name], delta)  # a scale of one changes nothing
        check("regrouped_update", first[name] + rest[name], delta, parts=[first[name], rest[name]], tokens=tokens,
              weights=WEIGHTS[name])
        check("regrouped_update", halved[name], 0.5 * delta, parts=[halved[name]], tokens=tokens,
              weights=WEIGHTS[name])


def test_a_malformed_scale_is_an_error():
    batch = _batch()
    with pytest.raises(ValueError, match="advantage_scale has rows of"):
        _update(batch, [[1.0] * 3 for _ in PROMPTS])
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        _update(batch, [[1.0, 1.0, 1.0, -1.0] for _ in PROMPTS])


def test_best_of_n_sft_trains_the_best_completion_alone():
    """bon_sft forwards only each group's best completion: the step equals training on those completions alone."""
    batch = _batch()
    picks = [max(range(4), key=lambda j, row=row: (row[j], -j)) for row in batch.rewards]  # first best on ties
    from tao_engine.rl.algorithms import AlgorithmConfig

    def step(ro) -> dict[str, torch.Tensor]:
        model = helpers.tiny_model(0, eos_token_id=100).train()
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        train_step(model, ro, torch.optim.SGD(model.parameters(), lr=1.0),
                   TrainConfig(AlgorithmConfig(name="bon_sft"), max_grad_norm=None))
        return {k: v.detach() - before[k] for k, v in model.named_parameters()}

    picked = batch.pick(picks)
    whole, alone = step(batch), step(picked)
    assert picked.n == 1 and [len(g) for g in picked.completion_token_ids] == [1, 1, 1]
    tokens = sum(len(g[0]) for g in picked.completion_token_ids)
    for name, delta in whole.items():
        check("regrouped_update", alone[name], delta, parts=[delta], tokens=tokens,
              weights=WEIGHTS[name])  # another batch layout
