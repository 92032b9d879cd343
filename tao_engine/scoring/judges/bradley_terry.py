"""Bradley-Terry strengths from pairwise outcomes, fitted by Hunter's MM algorithm (Ann. Statist. 2004).

Model: P(i beats j) = pi_i / (pi_i + pi_j). With W_i the wins of i (a tie counts half a win for each side) and n_ij
the games between i and j, the maximum-likelihood strengths satisfy W_i = sum_j n_ij pi_i / (pi_i + pi_j), and the
MM update  pi_i <- W_i / sum_j n_ij / (pi_i + pi_j)  increases the likelihood at every step.

The MLE does not exist when an item never wins or never loses (its strength runs off to 0 or infinity), which is
common in small judge groups (the best candidate wins every comparison). `prior` > 0 regularises: every item also
plays `prior` virtual games against a fixed anchor of strength 1 and wins half of them, which keeps all strengths
finite (and ties disconnected parts of the comparison graph to one scale) while barely moving well-determined ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fit_bradley_terry(
    num_items: int,
    comparisons: Sequence[tuple[int, int, float]],
    prior: float = 0.0,
    max_iter: int = 10_000,
    tol: float = 1e-10,
) -> list[float]:
    """Centred log-strengths (mean 0) of `num_items` items.

    comparisons: (i, j, outcome) with outcome 1.0 when i beat j, 0.0 when j beat i, 0.5 for a tie (any value in
    [0, 1] is a fractional win). With prior=0 every item must have won and lost something (else ValueError).
    """
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"fit_bradley_terry: num_items must be an int >= 1, got {num_items!r}")
    if not (isinstance(prior, (int, float)) and math.isfinite(prior) and prior >= 0):
        raise ValueError(f"fit_bradley_terry: prior must be a finite number >= 0, got {prior!r}")
    wins = [0.0] * num_items
    losses = [0.0] * num_items
    games: dict[tuple[int, int], float] = {}  # (low, high) -> number of games between the two
    for i, j, outcome in comparisons:
        if not (0 <= i < num_items and 0 <= j < num_items) or i == j:
            raise ValueError(f"fit_bradley_terry: comparison ({i}, {j}) must name two different items < {num_items}")
        if not 0.0 <= outcome <= 1.0:
            raise ValueError(f"fit_bradley_terry: outcome must be in [0, 1] (1 = first wins), got {outcome!r}")
        wins[i] += outcome
        wins[j] += 1.0 - outcome
        losses[i] += 1.0 - outcome
        losses[j] += outcome
        key = (min(i, j), max(i, j))
        games[key] = games.get(key, 0.0) + 1.0
    if prior == 0:
        bad = [k for k in range(num_items) if wins[k] <= 0 or losses[k] <= 0]
        if bad:
            raise ValueError(
                f"fit_bradley_terry: items {bad} never won or never lost, so their maximum-likelihood strength is "
                "infinite or zero; pass prior > 0 to regularise"
            )
    opponents: list[list[tuple[int, float]]] = [[] for _ in range(num_items)]
    for (i, j), n in games.items():
        opponents[i].append((j, n))
        opponents[j].append((i, n))

    strength = [1.0] * num_items
    half_prior = prior / 2.0
    for _ in range(max_iter):
        new = []
        for i in range(num_items):
            denominator = sum(n / (strength[i] + strength[j]) for j, n in opponents[i])
            denominator += prior / (strength[i] + 1.0)
            new.append((wins[i] + half_prior) / denominator if denominator > 0 else strength[i])
        if prior == 0:  # no anchor: fix the free scale by the geometric mean
            log_mean = sum(math.log(s) for s in new) / num_items
            new = [s / math.exp(log_mean) for s in new]
        change = max(abs(math.log(a) - math.log(b)) for a, b in zip(new, strength, strict=True))
        strength = new
        if change < tol:
            break
    logs = [math.log(s) for s in strength]
    mean = sum(logs) / num_items
    return [v - mean for v in logs]
