"""`PairwiseJudge` ("judge_pairwise"): the judge compares candidates two at a time, A vs B and B vs A.

Every chosen pair is judged in both orders, so a judge that favours the first (or second) position gives each side
one such advantage and the bias cancels. Verdicts of a group (ties count half a win) are aggregated into one score
per candidate by a Bradley-Terry fit (bradley_terry.py): the centred log-strength, so 0 is the group's average and a
difference of d means odds of e^d to 1 between two candidates.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tao_engine.scoring.judges.bradley_terry import fit_bradley_terry
from tao_engine.scoring.judges.engine_judge import EngineJudge, JudgeEngine
from tao_engine.scoring.judges.parsing import parse_preference
from tao_engine.scoring.judges.prompts import pairwise_prompt, truncate_middle

_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}  # score of the candidate shown as A


def choose_pairs(n: int, max_pairs: int | None, rng: random.Random) -> list[tuple[int, int]]:
    """All pairs i < j, or `max_pairs` of them: first a random ring through every candidate (so each takes part
    and the comparison graph is connected), then random other pairs."""
    every = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if max_pairs is None or max_pairs >= len(every):
        return every
    order = list(range(n))
    rng.shuffle(order)
    ring = [tuple(sorted((order[k], order[(k + 1) % n]))) for k in range(n)]
    chosen = list(dict.fromkeys(ring))[:max_pairs]
    rest = [p for p in every if p not in set(chosen)]
    rng.shuffle(rest)
    return sorted(chosen + rest[: max_pairs - len(chosen)])  # type: ignore[arg-type]


class PairwiseJudge(EngineJudge):
    """Group scorer: Bradley-Terry log-strength of each candidate from pairwise verdicts; None for a candidate with
    no readable verdict (and for a group of one). Metrics: `agreement` = share of pairs whose two orders agree,
    `position_a_rate` = share of non-tie verdicts that picked the response shown first."""

    name = "judge_pairwise"
    extra_counters = ("pairs", "order_pairs", "order_agreements", "a_wins", "b_wins", "ties")

    def __init__(
        self,
        model: str | Path | None = None,
        engine: JudgeEngine | None = None,
        *,
        rubric: str | None = None,
        max_pairs: int | None = None,  # pairs judged per group (a seeded sample); unset: every pair
        bt_prior: float = 1.0,  # virtual games that keep an undefeated candidate's Bradley-Terry strength finite
        max_tokens: int = 256,
        samples: int = 1,
        temperature: float | None = None,
        seed: int = 0,
        max_response_chars: int | None = 6000,
        engine_config: Mapping[str, Any] | None = None,
    ) -> None:
        if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 1):
            raise ValueError(f"{self.name}: max_pairs must be an int >= 1 or None (all pairs), got {max_pairs!r}")
        if isinstance(bt_prior, bool) or not isinstance(bt_prior, (int, float)) or not 0 < bt_prior < math.inf:
            raise ValueError(f"{self.name}: bt_prior must be a number > 0 (virtual games that keep an undefeated "
                             f"candidate's strength finite), got {bt_prior!r}")
        super().__init__(model, engine, rubric=rubric, max_tokens=max_tokens, samples=samples,
                         temperature=temperature, seed=seed, max_response_chars=max_response_chars,
                         engine_config=engine_config)
        self.max_pairs = max_pairs
        self.bt_prior = float(bt_prior)
        self.seed = seed

    def prompt_for(self, prompt: str, a: str, b: str) -> str:
        limit = self.max_response_chars
        return pairwise_prompt(prompt, truncate_middle(a, limit), truncate_middle(b, limit), self.rubric)

    def score_groups(
        self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any
    ) -> list[list[float | None]]:
        tasks = self.task_texts(prompts, groups, "groups", context)
        requests: list[tuple[int, int, int]] = []  # (group, candidate shown as A, candidate shown as B)
        for g, group in enumerate(groups):
            rng = random.Random(f"{self.seed}:{g}:{prompts[g]}")  # str seeds are stable across processes
            pairs = choose_pairs(len(group), self.max_pairs, rng)
            for i, j in pairs:
                requests += [(g, i, j), (g, j, i)]  # adjacent: both orders share the task prefix in the cache
            self.count("pairs", len(pairs))
        answers = self.run([self.prompt_for(tasks[g], groups[g][a], groups[g][b]) for g, a, b in requests])

        comparisons: list[list[tuple[int, int, float]]] = [[] for _ in groups]
        verdicts: dict[tuple[int, int, int], float] = {}  # (group, A, B) -> mean outcome of A
        for (g, a, b), texts in zip(requests, answers, strict=True):
            outcomes = []
            for text in texts or []:
                preference = parse_preference(text)
                if preference is None:
                    self.count_parse_failure()
                    continue
                self.count({"A": "a_wins", "B": "b_wins", "tie": "ties"}[preference])
                outcomes.append(_OUTCOME[preference])
                comparisons[g].append((a, b, _OUTCOME[preference]))
            if outcomes:
                verdicts[(g, a, b)] = sum(outcomes) / len(outcomes)
        self._count_order_agreement(verdicts)
        return [self._group_scores(len(group), comparisons[g]) for g, group in enumerate(groups)]

    def _count_order_agreement(self, verdicts: dict[tuple[int, int, int], float]) -> None:
        for (g, a, b), first in verdicts.items():
            if a < b and (g, b, a) in verdicts:
                second = 1.0 - verdicts[(g, b, a)]  # the same candidate a's outcome, shown second
                self.count("order_pairs")
                self.count("order_agreements", float(_side(first) == _side(second)))

    def _group_scores(self, n: int, comparisons: list[tuple[int, int, float]]) -> list[float | None]:
        compared = sorted({c for a, b, _ in comparisons for c in (a, b)})
        if len(compared) < 2:
            return [None] * n
        local = {c: k for k, c in enumerate(compared)}
        strengths = fit_bradley_terry(
            len(compared), [(local[a], local[b], s) for a, b, s in comparisons], prior=self.bt_prior
        )
        out: list[float | None] = [None] * n
        for c, value in zip(compared, strengths, strict=True):
            out[c] = value
        return out

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        decided = out["a_wins"] + out["b_wins"]
        out["agreement"] = out["order_agreements"] / out["order_pairs"] if out["order_pairs"] else 0.0
        out["position_a_rate"] = out["a_wins"] / decided if decided else 0.0
        return out


def _side(outcome: float) -> int:
    """1: the candidate won, -1: lost, 0: tie (a mean outcome of exactly one half)."""
    return 0 if outcome == 0.5 else (1 if outcome > 0.5 else -1)
