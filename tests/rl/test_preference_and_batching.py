"""Best-of-N SFT and DPO losses against plain math, group ranking with ties and missing rewards, and the minibatch
plan (whole groups, token budget, seeded shuffles)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tao_engine.rl.batching import plan_minibatches
from tao_engine.rl.preference import best_and_worst, dpo_loss, sft_nll
from tao_engine.rl.rewards import kl_per_token

nan = math.nan


def test_best_and_worst_skip_missing_rewards_and_break_ties_low():
    rewards = torch.tensor([[0.1, 0.9, 0.9, nan], [nan, 0.5, 0.2, 0.2], [1.0, 1.0, 1.0, 1.0]])
    best, worst = best_and_worst(rewards)
    assert best.tolist() == [1, 1, 0] and worst.tolist() == [0, 2, 0]


def test_sft_nll_and_dpo_match_plain_math():
    g, n, t = 3, 4, 5
    gen = torch.Generator().manual_seed(0)
    lp_values = -torch.rand(g * n, t, generator=gen, dtype=torch.float64) * 3
    lp = lp_values.clone().requires_grad_()
    ref = -torch.rand(g * n, t, generator=gen, dtype=torch.float64) * 3
    lengths = torch.randint(1, t + 1, (g * n,), generator=gen)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    best, worst = torch.tensor([2, 0, 3]), torch.tensor([1, 3, 0])

    expected = 0.0
    for i in range(g):
        row = i * n + int(best[i])
        k = int(lengths[row])
        expected += -sum(float(lp_values[row, j]) for j in range(k)) / k
    assert float(sft_nll(lp, mask, best)) == pytest.approx(expected / g, rel=1e-12)

    beta = 0.2
    expected = 0.0
    for i in range(g):
        c, r = i * n + int(best[i]), i * n + int(worst[i])
        seq = lambda row, x: sum(float(x[row, j]) for j in range(int(lengths[row])))  # noqa: E731
        margin = (seq(c, lp_values) - seq(c, ref)) - (seq(r, lp_values) - seq(r, ref))
        expected += math.log1p(math.exp(-beta * margin))
    loss = dpo_loss(lp, ref, mask, best, worst, beta)
    assert float(loss) == pytest.approx(expected / g, rel=1e-12)
    loss.backward()
    # Only the chosen and rejected rows' real tokens get gradient, with opposite signs.
    touched = (lp.grad.abs() > 0).any(dim=1).nonzero().flatten().tolist()
    picked = [i * n + int(best[i]) for i in range(g)] + [i * n + int(worst[i]) for i in range(g)]
    assert sorted(touched) == sorted(picked)
    assert (lp.grad[~mask] == 0).all()
    with pytest.raises(ValueError, match="reference"):
        dpo_loss(lp, None, mask, best, worst, beta)


def test_kl_estimators():
    lp = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)
    ref = torch.tensor([-1.5, -1.0, -0.5], dtype=torch.float64)
    x = ref - lp
    torch.testing.assert_close(kl_per_token(lp, ref, "k1"), -x)
    torch.testing.assert_close(kl_per_token(lp, ref, "k2"), 0.5 * x**2)
    torch.testing.assert_close(kl_per_token(lp, ref, "k3"), torch.exp(x) - x - 1)
    assert (kl_per_token(lp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="kl_type"):
        kl_per_token(lp, ref, "k9")


def _rollouts(prompt_lens, completion_lens):
    return SimpleNamespace(
        prompt_token_ids=[[1] * p for p in prompt_lens],
        completion_token_ids=[[[2] * c for c in comps] for comps in completion_lens],
    )


def test_minibatch_plan_keeps_groups_whole_and_fits_the_budget():
    ro = _rollouts([10, 3, 7, 20, 5], [[4, 0, 6], [1, 1, 1], [9, 2, 0], [5, 5, 5], [2, 2, 2]])
    keep = torch.tensor([True, True, False, True, True])
    plan = plan_minibatches(ro, keep, num_minibatches=2, max_tokens=25, seed=1)
    for epoch in range(3):
        minibatches = plan.epoch(epoch)
        assert len(minibatches) == 2
        groups = [g for mb in minibatches for g in mb.groups]
        assert sorted(groups) == [0, 1, 3, 4]  # every kept group exactly once, the dropped one never
        for mb in minibatches:
            assert sorted(g for micro in mb.micro_batches for g in micro) == sorted(mb.groups)
            for micro in mb.micro_batches:
                tokens = sum(plan.group_tokens[g] for g in micro)
                assert tokens <= 25 or len(micro) == 1  # an oversized group runs alone
            assert mb.num_tokens == sum(sum(plan.completion_tokens[g]) for g in mb.groups)
            assert mb.num_sequences == sum(1 for g in mb.groups for c in plan.completion_tokens[g] if c > 0)
    assert plan.group_tokens[3] == 20 + 15  # shared prompt: the prompt counted once
    unshared = plan_minibatches(ro, keep, 1, 25, shared_prompt=False)
    assert unshared.group_tokens[3] == 3 * 20 + 15
    assert [mb.groups for mb in plan.epoch(5)] == [mb.groups for mb in plan.epoch(5)]  # seeded


def test_micro_batch_shares_sum_to_one():
    ro = _rollouts([4, 4, 4], [[3, 0], [2, 5], [1, 1]])
    plan = plan_minibatches(ro, torch.ones(3, dtype=torch.bool), 1, max_tokens=9)
    (mb,) = plan.epoch(0)
    assert len(mb.micro_batches) > 1
    for agg in ("token_mean", "seq_mean_token_mean"):
        total = 0.0
        for micro in mb.micro_batches:
            lengths = torch.tensor([c for g in micro for c in plan.completion_tokens[g]])
            mask = torch.arange(5)[None, :] < lengths[:, None]
            total += mb.share(micro, mask, agg)
        assert total == pytest.approx(1.0)
