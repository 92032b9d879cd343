"""`CompositeScorer`: run several scorers on the same groups, combine their scores with weights, report diagnostics.

Every scorer receives every context key; scorers take `**context` and ignore the keys they do not use.

Combine modes (None scores are absent: they neither add nor count):
- "weighted_sum":        c = sum_k w_k * s_k
- "normalize_then_sum":  c = sum_k w_k * z_k, z_k = s_k standardized within the prompt's group (mean 0, std 1;
                         a group whose scores are all equal gives 0), so scorers on different scales weigh as asked
- "sum_then_normalize":  the weighted sum, then standardized within the group
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tao_engine.scoring.base import (
    GroupScorer,
    Scorer,
    ScoreReport,
    Scores,
    ScoringError,
    check_context,
    check_scorer,
    run_scorer,
)
from tao_engine.scoring.scorer_process import ScorerTimeout, is_async_scorer, pickle_for_worker, process_proxy

CombineMode = Literal["weighted_sum", "normalize_then_sum", "sum_then_normalize"]
OnError = Literal["raise", "none"]
COMBINE_MODES = ("weighted_sum", "normalize_then_sum", "sum_then_normalize")
ON_ERROR_MODES = ("raise", "none")
COMBINED = "combined"  # metrics prefix of the combined score; no scorer may take this name


@dataclass(frozen=True)
class WeightedScorer:
    scorer: Scorer | GroupScorer
    weight: float = 1.0  # 0 keeps a scorer for its diagnostics only; negative makes it a penalty
    label: str | None = None  # report name, to tell apart two scorers of the same kind; default scorer.name
    # Bound on each call: an async scorer's coroutine is cancelled, a sync scorer runs in a worker process that is
    # killed (tao_engine.scoring.scorer_process says why a process). A call past it scores None and is counted.
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        check_scorer(self.scorer)
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"scorer {self.name!r}: weight must be a finite number, got {w!r}")
        t = self.timeout_s
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf):
            raise ValueError(f"scorer {self.name!r}: timeout_s must be a number > 0 or None, got {t!r}")
        if self.in_worker:  # a limit that cannot be enforced is refused now, not discovered mid-run
            pickle_for_worker(self.scorer, f"scorer {self.name!r} (timeout_s={t})")

    @property
    def in_worker(self) -> bool:
        """Whether calls run in a worker process: a sync scorer with a time limit."""
        return self.timeout_s is not None and not is_async_scorer(self.scorer)

    @property
    def name(self) -> str:
        return self.label or self.scorer.name


def standardize(values: Scores) -> Scores:
    """(v - mean) / std over the non-None values of one group; 0 for every value when they are all equal."""
    present = [v for v in values if v is not None]
    if not present:
        return list(values)
    mean = sum(present) / len(present)
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / len(present))
    return [None if v is None else ((v - mean) / std if std > 1e-12 else 0.0) for v in values]


def weighted_sum(columns: Sequence[tuple[float, Scores]], n: int) -> Scores:
    out: Scores = []
    for j in range(n):
        terms = [w * s[j] for w, s in columns if s[j] is not None]  # type: ignore[operator]
        out.append(sum(terms) if terms else None)
    return out


def score_stats(scores: list[Scores]) -> dict[str, float]:
    """mean / std of the non-None scores, the fraction of None, and the fraction of groups (with at least one
    score) whose scores are all equal: those give a group-relative advantage of zero."""
    flat = [v for g in scores for v in g]
    present = [v for v in flat if v is not None]
    mean = sum(present) / len(present) if present else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / len(present)) if present else math.nan
    scored_groups = [[v for v in g if v is not None] for g in scores]
    scored_groups = [g for g in scored_groups if g]
    zero_var = sum(1 for g in scored_groups if max(g) - min(g) <= 1e-12)
    return {
        "mean": mean,
        "std": std,
        "none_frac": (len(flat) - len(present)) / len(flat) if flat else 0.0,
        "zero_variance_frac": zero_var / len(scored_groups) if scored_groups else math.nan,
    }


class CompositeScorer:
    """Runs `entries` on [P] prompts x [n_i] candidates and returns a `ScoreReport`."""

    def __init__(self, entries: Sequence[WeightedScorer], combine: CombineMode = "weighted_sum",
                 on_error: OnError = "raise"):
        if not entries:
            raise ValueError("CompositeScorer needs at least one scorer")
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
        if on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {on_error!r}")
        for e in entries:
            if not isinstance(e, WeightedScorer):
                raise TypeError(f"CompositeScorer entries must be WeightedScorer, got {type(e).__name__}")
        names = [e.name for e in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scorer names must be unique, {dupes} repeat: give each a distinct `label`")
        if COMBINED in names:
            raise ValueError(f"{COMBINED!r} is reserved for the combined score; give that scorer another `label`")
        self.entries = list(entries)
        self.combine = combine
        self.on_error = on_error
        # What each entry's calls go through: the scorer itself, or its worker-process proxy (started on first use).
        self._runners = {e.name: process_proxy(e.scorer, e.timeout_s, f"scorer {e.name!r}") if e.in_worker
                         else e.scorer for e in self.entries}

    def close(self) -> None:
        """Stop the worker processes of time-limited sync scorers (they also stop when this object is collected)."""
        for runner in self._runners.values():
            if runner is not None and hasattr(runner, "process"):  # a proxy; scorers themselves stay open
                runner.close()

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> ScoreReport:
        if len(groups) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(groups)} groups")
        check_context(context, len(prompts), "prompt")
        per_scorer: dict[str, list[Scores]] = {}
        metrics: dict[str, float] = {}
        for entry in self.entries:
            try:
                scores, errors, retried = self._run_one(entry, prompts, groups, context)
                timed_out = False
            except ScorerTimeout:  # None for this call's candidates, counted; never a blocked or failed step
                scores, errors, retried, timed_out = [[None] * len(g) for g in groups], 0, False, True
            per_scorer[entry.name] = scores
            metrics.update({f"{entry.name}/{k}": v for k, v in score_stats(scores).items()})
            metrics[f"{entry.name}/errors"] = float(errors)
            if entry.timeout_s is not None:
                metrics[f"{entry.name}/timeouts"] = float(timed_out)
            if retried:
                metrics[f"{entry.name}/batch_retries"] = 1.0
            extra = getattr(self._runners[entry.name], "metrics", None)
            if callable(extra) and not timed_out:  # a killed worker's counters are gone with it
                try:
                    metrics.update({f"{entry.name}/{k}": float(v) for k, v in extra().items()})
                except ScorerTimeout:
                    metrics[f"{entry.name}/timeouts"] = 1.0
        combined = [self._combine(i, len(g), per_scorer) for i, g in enumerate(groups)]
        metrics.update({f"{COMBINED}/{k}": v for k, v in score_stats(combined).items()})
        return ScoreReport(scores=combined, per_scorer=per_scorer, metrics=metrics,
                           answers=self._answer_keys(prompts, groups, context))

    def _answer_keys(self, prompts: Sequence[str], groups: Sequence[Sequence[str]],
                     context: dict[str, Any]) -> list[list[Hashable | None]] | None:
        """The first voting scorer's answer keys [P][n] (see ScoreReport.answers); None when no scorer votes or its
        keys cannot be had (the vote's own scores are already in; the keys only feed diagnostics and guards)."""
        for entry in self.entries:
            keys_of = getattr(entry.scorer, "answer_keys", None)
            if callable(keys_of):
                try:
                    keys = keys_of(prompts, groups, **context)
                except Exception:  # noqa: BLE001 - on_error already decided about this scorer's scores
                    return None
                if [len(k) for k in keys] != [len(g) for g in groups]:
                    raise ValueError(f"scorer {entry.name!r}: answer_keys must give one key per candidate")
                return [list(k) for k in keys]
        return None

    def _combine(self, i: int, n: int, per_scorer: dict[str, list[Scores]]) -> Scores:
        columns = [(e.weight, per_scorer[e.name][i]) for e in self.entries]
        if self.combine == "normalize_then_sum":
            columns = [(w, standardize(s)) for w, s in columns]
        out = weighted_sum(columns, n)
        return standardize(out) if self.combine == "sum_then_normalize" else out

    def _run_one(self, entry: WeightedScorer, prompts: Sequence[str], groups: Sequence[Sequence[str]],
                 context: dict[str, Any]) -> tuple[list[Scores], int, bool]:
        """(scores, failed prompt count, whether the batch call failed and was retried prompt by prompt). A call past
        the time limit raises ScorerTimeout, without a retry: prompt by prompt would only multiply the wait."""
        runner = self._runners[entry.name]
        try:
            return run_scorer(runner, prompts, groups, entry.timeout_s, **context), 0, False
        except ScorerTimeout:
            raise
        except Exception as exc:  # noqa: BLE001 - attributed below, re-raised as ScoringError or counted
            if len(prompts) == 1:
                if self.on_error == "raise":
                    raise ScoringError(entry.name, 0, exc) from exc
                return [[None] * len(groups[0])], 1, False
        # The batch failed: score prompt by prompt to name the failing prompt(s) and keep the others' scores.
        out: list[Scores] = []
        errors = 0
        for i, (p, g) in enumerate(zip(prompts, groups, strict=True)):
            ctx = {k: [v[i]] for k, v in context.items()}
            try:
                out.extend(run_scorer(runner, [p], [g], entry.timeout_s, **ctx))
            except ScorerTimeout:
                raise
            except Exception as exc:  # noqa: BLE001
                if self.on_error == "raise":
                    raise ScoringError(entry.name, i, exc) from exc
                out.append([None] * len(g))
                errors += 1
        return out, errors, True
