"""train_step on a tiny random model: every algorithm raises a toy reward (emit a target token) within a CI-sized
budget, every trainable parameter changes, micro-batch accumulation equals one big batch, the engine samples from
the updated module, and bad input is a clear error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.logprobs import completion_logprobs
from tao_engine.rl.optim import OptimConfig, build_optimizer
from tao_engine.rl.reference import frozen_copy
from tao_engine.rl.rollouts import rollout
from tao_engine.rl.trainer import TrainConfig, train_step
from tests import helpers
from tests.error_bounds import assert_within_bound, unit_roundoff
from tests.tolerances import bound

VOCAB = 101
TARGET = 7  # the toy task: emit token 7 as often as possible
PROMPTS = [[3, 14, 15, 92], [65, 35], [89, 79, 32, 38, 46], [26, 43]]


def _model(seed: int = 0) -> torch.nn.Module:
    return helpers.tiny_model(seed, eos_token_id=VOCAB - 1).train()


def _engine(model) -> Engine:
    return Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=4))


def _scored(engine, n: int = 8, max_tokens: int = 6, seed: int | None = None):
    sampling = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, ignore_eos=True, seed=seed)
    ro = rollout(engine, PROMPTS, sampling)
    rewards = [[sum(t == TARGET for t in c) / max(1, len(c)) for c in group] for group in ro.completion_token_ids]
    return dataclasses.replace(ro, rewards=rewards)


def _random_rewards(ro, seed: int):
    # Rewards that vary within every group, so that every group carries gradient.
    gen = torch.Generator().manual_seed(seed)
    return dataclasses.replace(ro, rewards=torch.rand(ro.num_prompts, ro.n, generator=gen).tolist())


def _mean_reward(engine) -> float:
    ro = _scored(engine, n=16, max_tokens=6, seed=12345)
    values = [r for g in ro.rewards for r in g]
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "name", ["grpo", "dapo", "rloo", "ppo", "dr_grpo", "gspo", "reinforce_pp", "bon_sft", "dpo"]
)
def test_algorithm_raises_a_toy_reward(name):
    torch.manual_seed(0)
    model = _model()
    engine = _engine(model)
    before = _mean_reward(engine)
    algo = AlgorithmConfig(name=name)
    lr = 5e-2 if name == "gspo" else 2e-2  # GSPO's sequence ratio clips at 3e-4 / 4e-4: it moves less per step
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    reference = frozen_copy(model) if algo.needs_reference else None
    config = TrainConfig(algorithm=algo, max_tokens_per_forward=64)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    for _ in range(12):
        stats = train_step(model, _scored(engine), optimizer, config, reference=reference)
        assert stats.optimizer_steps == algo.epochs * algo.num_minibatches or name in ("dapo", "dpo", "bon_sft")
    after = _mean_reward(engine)
    assert after > before + 0.15, f"{name}: mean reward {before:.3f} -> {after:.3f}"
    unchanged = [k for k, v in model.named_parameters() if v.requires_grad and torch.equal(v, initial[k])]
    assert not unchanged, f"{name}: parameters never updated: {unchanged}"


def _assert_same_update(results: list[dict[str, torch.Tensor]], train) -> None:
    """Two fp32 runs of the same training (other micro-batches, recomputed activations): their weights within the
    bound of the forward's and backward's rounding through `train` (tests/bounds/model.py, grad=True)."""
    names = list(results[0])

    def weights(m) -> torch.Tensor:
        train(m)
        params = dict(m.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in names])

    limits = bound("model_outputs", model=_model(), outputs=weights, grad=True).split(
        [results[0][n].numel() for n in names])
    for name, limit in zip(names, limits, strict=True):
        weight = results[0][name].double()
        # plus each path's rounding of w - lr g at its (at most two) updates: u |w| each
        limit = limit.view_as(weight) + 4 * unit_roundoff(torch.float32) * weight.abs()
        assert_within_bound(results[1][name], weight, limit, name)


def test_micro_batches_accumulate_to_the_whole_batch_gradient():
    engine = _engine(_model())
    ro = _random_rewards(_scored(engine, n=4, max_tokens=5, seed=3), seed=3)
    results = []

    def train(model, budget: int = 10_000) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        for agg in ("token_mean", "seq_mean_token_mean"):
            cfg = TrainConfig(AlgorithmConfig(name="grpo", loss_agg=agg), max_tokens_per_forward=budget,
                              max_grad_norm=None)
            train_step(model, ro, optimizer, cfg)

    for budget in (10_000, 12):  # one forward for everything, or one group per micro-batch
        model = _model()
        train(model, budget)
        results.append({k: v.detach().clone() for k, v in model.named_parameters()})
    _assert_same_update(results, train)
    initial = _model().state_dict()
    assert all(not torch.equal(results[0][k], initial[k]) for k in results[0])  # the update is not trivially zero


@pytest.mark.parametrize("optimizer_kind", ["torch", "build_optimizer"])
def test_the_engine_samples_from_the_updated_module(optimizer_kind):
    # build_optimizer's fused AdamW writes the weights without bumping their version counters, by which the engine
    # sees an update; GuardedStep bumps them, so a user's own Engine drops its prompt KV of the old weights.
    model = _model()
    engine = _engine(model)
    ro = _scored(engine, seed=1)
    if optimizer_kind == "torch":
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-2)
    else:
        optimizer = build_optimizer(model, OptimConfig(lr=5e-2))
        assert optimizer.defaults.get("fused")
    before = _scored(engine, seed=99).raw_logprobs
    train_step(model, ro, optimizer, TrainConfig())
    after = _scored(engine, seed=99)
    assert before[0][0][0] != after.raw_logprobs[0][0][0]  # first token's log-prob under new weights, no copy, no sync
    # ... and all of it under the new weights: a fresh engine on the updated module samples the same tokens with the
    # same log-probs (the same computation, bit for bit), where prompt KV of the old weights would shift them.
    fresh = _scored(_engine(model), seed=99)
    assert after.completion_token_ids == fresh.completion_token_ids
    assert after.raw_logprobs == fresh.raw_logprobs


def test_non_finite_rewards_and_missing_inputs_are_clear_errors():
    model = _model()
    engine = _engine(model)
    ro = _scored(engine, n=2, max_tokens=3, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="score them first"):
        train_step(model, dataclasses.replace(ro, rewards=None), optimizer)
    with pytest.raises(ValueError, match="reference"):
        train_step(model, ro, optimizer, TrainConfig(AlgorithmConfig(name="dpo")))
    with pytest.raises(ValueError, match="old_logprobs='sampler'"):
        sampling = dataclasses.replace(ro.sampling, top_p=0.9)
        cfg = TrainConfig(AlgorithmConfig(old_logprobs="sampler"), loss_temperature=0.7)
        train_step(model, dataclasses.replace(ro, sampling=sampling), optimizer, cfg)


def test_a_nan_loss_skips_the_step_and_leaves_weights_untouched():
    model = _model()
    engine = _engine(model)
    ro = _scored(engine, n=2, max_tokens=3, seed=0)
    ro = dataclasses.replace(ro, rewards=[[float("inf"), 0.0] for _ in ro.rewards])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    stats = train_step(model, ro, optimizer, TrainConfig(AlgorithmConfig(name="rloo")))
    assert stats.skipped_steps == 1 and stats.optimizer_steps == 0
    assert all(torch.equal(v, initial[k]) for k, v in model.named_parameters())


def test_gradient_checkpointing_gives_the_same_update():
    engine = _engine(_model())
    ro = _random_rewards(_scored(engine, n=4, max_tokens=5, seed=7), seed=7)
    results = []

    def train(model, checkpointing: bool = False) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_step(model, ro, optimizer, TrainConfig(gradient_checkpointing=checkpointing, max_grad_norm=None))

    for checkpointing in (False, True):
        model = _model()
        train(model, checkpointing)
        results.append({k: v.detach().clone() for k, v in model.named_parameters()})
    _assert_same_update(results, train)
    assert any(not torch.equal(results[0][k], _model().state_dict()[k]) for k in results[0])


class _LinearPolicy(torch.nn.Module):
    """Embeddings through one Linear into the LM head, a policy whose forward bf16 autocast changes (the decoder's
    add_rms_norm refuses autocast's mix of a bf16 sublayer output and an fp32 residual, so the tiny model cannot)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.proj = torch.nn.Linear(16, 16)
        self.lm_head = torch.nn.Linear(16, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor, batch) -> torch.Tensor:
        return torch.tanh(self.proj(self.embed(ids)))  # [N, 16]


@pytest.mark.parametrize("make_policy", [_LinearPolicy, lambda: _model()], ids=["linear", "decoder"])
def test_the_first_pass_ratio_is_exactly_one_under_autocast(make_policy):
    # The old log-probs (a no-grad forward of the whole batch) and the update's come from the same weights, so the
    # ratio is exactly 1 only when autocast wraps both forwards alike. CPU autocast stands in for CUDA's here. The
    # decoder case also runs our own model with fp32 weights under bf16 autocast (the residual stream stays fp32).
    torch.manual_seed(0)
    policy = make_policy()
    sampling = SamplingParams(n=4, temperature=1.0, max_tokens=6, ignore_eos=True, seed=1)
    ro = _random_rewards(rollout(_engine(_model()), PROMPTS, sampling), seed=0)
    config = TrainConfig(algorithm=AlgorithmConfig(name="grpo", epochs=2), autocast_devices=("cuda", "cpu"))
    with torch.no_grad():  # autocast does change this policy's log-probs: the test can tell
        fp32 = completion_logprobs(policy, ro.prompt_token_ids, ro.completion_token_ids).logprobs
        bf16 = config.policy_forward(1.0).logprobs(policy, ro.prompt_token_ids, ro.completion_token_ids).logprobs
    assert not torch.equal(fp32, bf16)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.0)  # the weights stay: every pass sees the old policy
    stats = train_step(policy, ro, optimizer, config)  # 2 epochs: the old log-probs come from the trainer
    assert stats.metrics["ratio_mean"] == 1.0
    assert stats.metrics["clip_fraction"] == 0.0
