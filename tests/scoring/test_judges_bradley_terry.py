"""Bradley-Terry by MM against hand-computed maximum-likelihood strengths, ties as half wins, the prior."""

from __future__ import annotations

import math

import pytest

from tao_engine.scoring.judges.bradley_terry import fit_bradley_terry


def games(i: int, j: int, wins_i: int, wins_j: int, ties: int = 0) -> list[tuple[int, int, float]]:
    return [(i, j, 1.0)] * wins_i + [(i, j, 0.0)] * wins_j + [(i, j, 0.5)] * ties


def test_two_items_odds_equal_the_win_ratio():
    # 3 wins to 1: pi_0 / pi_1 = 3, so the centred log-strengths are +-ln(3)/2.
    assert fit_bradley_terry(2, games(0, 1, 3, 1)) == pytest.approx([math.log(3) / 2, -math.log(3) / 2], abs=1e-8)


def test_a_tie_counts_half_a_win_for_each_side():
    # 1 win and 1 tie: W_0 = 1.5, W_1 = 0.5 -> ratio 3, the same as 3 wins to 1.
    assert fit_bradley_terry(2, games(0, 1, 1, 0, ties=1)) == pytest.approx(fit_bradley_terry(2, games(0, 1, 3, 1)))
    # Only ties: equal strengths.
    assert fit_bradley_terry(2, games(0, 1, 0, 0, ties=3)) == pytest.approx([0.0, 0.0], abs=1e-10)


def test_three_items_with_a_consistent_bradley_terry_solution():
    # Strengths (4, 2, 1) fit these counts exactly: W_i = sum_j n_ij pi_i / (pi_i + pi_j) for every i
    # (item 0: 2 + 4 = 3*4/6 + 5*4/5; item 1: 1 + 2 = 3*2/6 + 3*2/3; item 2: 1 + 1 = 3*1/3 + 5*1/5).
    data = games(0, 1, 2, 1) + games(1, 2, 2, 1) + games(0, 2, 4, 1)
    assert fit_bradley_terry(3, data) == pytest.approx([math.log(2), 0.0, -math.log(2)], abs=1e-8)
    # Order of the comparisons and which side is listed first do not matter.
    flipped = [(j, i, 1.0 - s) for i, j, s in reversed(data)]
    assert fit_bradley_terry(3, flipped) == pytest.approx([math.log(2), 0.0, -math.log(2)], abs=1e-8)


def test_a_cycle_gives_equal_strengths():
    data = games(0, 1, 1, 0) + games(1, 2, 1, 0) + games(2, 0, 1, 0)
    assert fit_bradley_terry(3, data) == pytest.approx([0.0, 0.0, 0.0], abs=1e-8)


def test_solution_satisfies_the_likelihood_equations():
    data = games(0, 1, 5, 2, ties=1) + games(1, 2, 1, 3) + games(0, 2, 2, 2) + games(2, 3, 4, 1) + games(0, 3, 1, 1)
    logs = fit_bradley_terry(4, data)
    pi = [math.exp(v) for v in logs]
    for k in range(4):
        wins = sum(s if i == k else 1 - s for i, j, s in data if k in (i, j))
        expected = sum(pi[k] / (pi[k] + pi[j if i == k else i]) for i, j, _ in data if k in (i, j))
        assert wins == pytest.approx(expected, abs=1e-7)
    assert sum(logs) == pytest.approx(0.0, abs=1e-12)


def test_prior_keeps_an_undefeated_item_finite_and_matches_its_equations():
    data = games(0, 1, 2, 0) + games(1, 2, 1, 1)
    with pytest.raises(ValueError, match="never won or never lost"):
        fit_bradley_terry(3, data)
    prior = 1.0
    logs = fit_bradley_terry(3, data, prior=prior)
    assert logs[0] > logs[2] > logs[1]  # 2 drew with 1, who lost twice to 0
    assert all(math.isfinite(v) for v in logs)
    # Penalised equations: W_i + prior/2 = sum_j n_ij pi_i/(pi_i+pi_j) + prior * pi_i/(pi_i + anchor), with the
    # anchor's strength 1 on the uncentred scale: recover that scale by solving for the shift c.
    def residual(shift: float) -> float:
        pi = [math.exp(v + shift) for v in logs]
        return sum(pi[k] / (pi[k] + 1) for k in range(3)) * prior - 3 * prior / 2
    lo, hi = -20.0, 20.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if residual(mid) < 0 else (lo, mid)
    pi = [math.exp(v + lo) for v in logs]
    for k in range(3):
        wins = sum(s if i == k else 1 - s for i, j, s in data if k in (i, j)) + prior / 2
        expected = sum(pi[k] / (pi[k] + pi[j if i == k else i]) for i, j, _ in data if k in (i, j))
        assert wins == pytest.approx(expected + prior * pi[k] / (pi[k] + 1), abs=1e-6)


def test_prior_pulls_towards_equal_and_an_item_without_games_sits_at_the_anchor():
    weak = fit_bradley_terry(2, games(0, 1, 3, 1), prior=0.1)
    strong = fit_bradley_terry(2, games(0, 1, 3, 1), prior=10.0)
    assert math.log(3) / 2 > weak[0] > strong[0] > 0
    lonely = fit_bradley_terry(3, games(0, 1, 1, 0), prior=1.0)
    assert lonely[0] > lonely[2] > lonely[1]  # no games: strength 1 (the anchor), between winner and loser


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="two different items"):
        fit_bradley_terry(2, [(0, 0, 1.0)])
    with pytest.raises(ValueError, match="outcome must be in"):
        fit_bradley_terry(2, [(0, 1, 2.0)])
    with pytest.raises(ValueError, match="prior"):
        fit_bradley_terry(2, games(0, 1, 1, 1), prior=-1)
