"""The scoring contract: what a scorer is, how one is run, and what a run reports.

A `Scorer` gives one number per (prompt, completion) pair; a `GroupScorer` sees the n candidates of each prompt at
once (majority vote, result-set agreement, group judges). A group scorer that votes over answers may also give
`answer_keys(prompts, groups, **context) -> [P][n]` hashable keys (equal = the same answer, None = none given).
Either may be `async def`: `run_scorer` awaits it. `None` means "not applicable" (or "failed" under
on_error="none"), never a silent 0.

Scorers may expose `metrics() -> dict[str, float]`: counters or means since the previous call, with UNPREFIXED keys
("parse_failures", "agreement", ...); `CompositeScorer` prefixes them with the scorer's name.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tao_engine.scoring.scorer_process import resolve

Scores = list[float | None]


@runtime_checkable
class Scorer(Protocol):
    """Pointwise: `context` values are per-item sequences aligned with `completions` (e.g. `db_path=[...]`)."""

    name: str

    def score(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Sequence[Any]
    ) -> Scores | Awaitable[Scores]: ...


@runtime_checkable
class GroupScorer(Protocol):
    """Group-wise: `groups[i]` holds the candidates of `prompts[i]`; `context` values are per-prompt sequences."""

    name: str

    def score_groups(
        self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Sequence[Any]
    ) -> list[Scores] | Awaitable[list[Scores]]: ...


class ScoringError(RuntimeError):
    """A scorer raised (or returned something malformed) while scoring the group of prompt `prompt_index`."""

    def __init__(self, scorer: str, prompt_index: int | None, cause: BaseException):
        where = f"prompt {prompt_index}" if prompt_index is not None else "the batch"
        super().__init__(f"scorer {scorer!r} failed on {where}: {type(cause).__name__}: {cause}")
        self.scorer = scorer
        self.prompt_index = prompt_index
        self.cause = cause


@dataclass
class ScoreReport:
    scores: list[Scores]  # [P][n] combined score of each candidate
    per_scorer: dict[str, list[Scores]]  # name -> [P][n] raw scores of that scorer
    metrics: dict[str, float] = field(default_factory=dict)  # "<scorer>/mean", "<scorer>/std", ...
    # [P][n] each candidate's answer as the voting scorer keys it (equal keys = the same answer; None = no answer),
    # from the first scorer with `answer_keys`; None when no scorer votes. Read by the guards and the probe.
    answers: list[list[Hashable | None]] | None = None


def is_group_scorer(scorer: object) -> bool:
    return callable(getattr(scorer, "score_groups", None))


def check_scorer(scorer: object) -> None:
    """Raise TypeError unless `scorer` has a `name` and a `score` or `score_groups` method."""
    name = getattr(scorer, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{scorer!r} is not a scorer: it needs a non-empty str attribute `name`")
    if not is_group_scorer(scorer) and not callable(getattr(scorer, "score", None)):
        raise TypeError(f"scorer {name!r} needs a `score(prompts, completions, **context)` or "
                        f"`score_groups(prompts, groups, **context)` method")


def check_scores(values: Any, expected: int, what: str) -> Scores:
    """Validate a scorer's output: a sequence of `expected` finite numbers or None."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{what}: expected a list of {expected} floats/None, got {type(values).__name__}")
    if len(values) != expected:
        raise ValueError(f"{what}: expected {expected} scores, got {len(values)}")
    out: Scores = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{what}: a score must be a finite number or None, got {v!r}")
        out.append(float(v))
    return out


def check_context(context: Mapping[str, Any], expected: int, what: str) -> None:
    for key, values in context.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != expected:
            raise ValueError(f"{what}: context {key!r} must be a sequence with one entry per {what} ({expected}), "
                             f"got {type(values).__name__}")


def run_scorer(
    scorer: Scorer | GroupScorer,
    prompts: Sequence[str],
    groups: Sequence[Sequence[str]],
    timeout_s: float | None = None,
    **context: Sequence[Any],
) -> list[Scores]:
    """Score every candidate of every group: [P][n_i]. Group scorers get the groups as they are; pointwise scorers
    get the flattened candidates, each prompt and per-prompt context value repeated for its candidates.
    `timeout_s` bounds an async scorer's coroutine (ScorerTimeout past it); a sync scorer with a limit runs in a
    worker process instead (`CompositeScorer` sets that up). Errors propagate as raised; `CompositeScorer`
    attributes them to a prompt."""
    if len(groups) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(groups)} groups")
    check_context(context, len(prompts), "prompt")
    if is_group_scorer(scorer):
        out = resolve(scorer.score_groups(prompts, groups, **context), timeout_s)  # type: ignore[union-attr]
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence) or len(out) != len(groups):
            raise ValueError(f"score_groups returned {type(out).__name__} instead of {len(groups)} lists")
        return [check_scores(s, len(g), f"group {i}") for i, (s, g) in enumerate(zip(out, groups, strict=True))]
    sizes = [len(g) for g in groups]
    flat_prompts = [p for p, n in zip(prompts, sizes, strict=True) for _ in range(n)]
    flat_completions = [c for g in groups for c in g]
    flat_context = {k: [v for v, n in zip(vs, sizes, strict=True) for _ in range(n)] for k, vs in context.items()}
    flat = resolve(scorer.score(flat_prompts, flat_completions, **flat_context), timeout_s)  # type: ignore[union-attr]
    flat = check_scores(flat, len(flat_completions), "score")
    out_groups, start = [], 0
    for n in sizes:
        out_groups.append(flat[start : start + n])
        start += n
    return out_groups
