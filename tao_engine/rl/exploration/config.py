"""The `[exploration]` section: how candidates are explored while tuning (the generate stage of the TAO loop).

    [exploration]
    strategy = "reason"                  # plain | reason | refine | mixed
    reason_template = "step_by_step"     # a built-in name (templates.REASON_TEMPLATES) or your text with {prompt}
    transform = "final_number"           # or a table: {kind = "after_marker", marker = "Answer:"} / {kind = "regex",
                                         #   pattern = "..."}; kinds in transforms.TRANSFORM_KINDS
    max_tokens = 256                     # exploration budget per generation; None = [sampling].max_tokens
    refine_rounds = 1                    # refine: critique + revise rounds after the draft
    tokens_budget_per_prompt = 2048      # mixed: generated tokens per prompt over all its entries
    [[exploration.mixed]]                # mixed: one table per entry
    strategy = "reason"
    temperature = 0.8
    n = 4

Every field is validated on construction; an unknown key is an error naming it (`dataclass_from_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tao_engine.config_dict import dataclass_from_dict
from tao_engine.rl.exploration.templates import (
    DEFAULT_CRITIQUE_TEMPLATE,
    DEFAULT_REVISE_TEMPLATE,
    check_template,
    reason_template_text,
)

STRATEGIES = ("plain", "reason", "refine", "mixed")
MIXED_ENTRY_STRATEGIES = ("plain", "reason", "refine")
TRANSFORM_KINDS = ("identity", "final_sql", "final_number", "after_marker", "regex")


@dataclass(frozen=True)
class TransformConfig:
    """How an exploration output becomes the response the model should give directly (see transforms.py)."""

    kind: str = "after_marker"  # identity, final_sql, final_number, after_marker or regex
    marker: str = "Answer:"  # after_marker: the text after its last occurrence
    pattern: str | None = None  # regex: the last match's group 1 (or the whole match when it has no group)

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise ValueError(f"[exploration] transform kind must be one of {TRANSFORM_KINDS}, got {self.kind!r}")
        if self.kind == "after_marker" and (not isinstance(self.marker, str) or not self.marker):
            raise ValueError("[exploration] transform 'after_marker' needs a non-empty marker (marker = \"Answer:\")")
        if self.kind == "regex":
            if not isinstance(self.pattern, str) or not self.pattern:
                raise ValueError("[exploration] transform 'regex' needs pattern = \"...\" (a Python regex)")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"[exploration] transform pattern {self.pattern!r} is not a regex: {exc}") from None
        elif self.pattern is not None:
            raise ValueError(f"[exploration] transform pattern is only used by kind 'regex', not {self.kind!r}")


@dataclass(frozen=True)
class MixedEntry:
    """One strategy of a `mixed` exploration: `n` candidates per prompt at `temperature`."""

    strategy: str  # plain, reason or refine
    temperature: float = 1.0  # of this entry's samples
    n: int = 1  # candidates per prompt from this entry

    def __post_init__(self) -> None:
        if self.strategy not in MIXED_ENTRY_STRATEGIES:
            raise ValueError(
                f"[exploration] mixed entry strategy must be one of {MIXED_ENTRY_STRATEGIES}, got {self.strategy!r}"
            )
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"[exploration] mixed entry n must be an integer >= 1, got {self.n!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) or not (
            self.temperature == 0 or self.temperature >= 1e-3
        ):
            raise ValueError(f"[exploration] mixed entry temperature must be 0 or >= 1e-3, got {self.temperature!r}")


@dataclass(frozen=True)
class ExplorationConfig:
    strategy: str = "plain"
    reason_template: str = "step_by_step"
    critique_template: str = DEFAULT_CRITIQUE_TEMPLATE  # refine: asks for the draft's mistakes ({prompt}, {draft})
    revise_template: str = DEFAULT_REVISE_TEMPLATE  # refine: asks for the corrected answer (+ {critique})
    transform: TransformConfig = field(default_factory=TransformConfig)
    max_tokens: int | None = None  # per exploration generation; None = [sampling].max_tokens
    refine_rounds: int = 1
    mixed: tuple[MixedEntry, ...] = ()  # mixed: [[exploration.mixed]] entries {strategy, temperature, n}
    tokens_budget_per_prompt: int | None = None  # mixed only

    def __post_init__(self) -> None:
        # TOML tables arrive as mappings and lists: build the nested dataclasses here, so from_dict needs no help.
        transform = self.transform
        if isinstance(transform, str):
            transform = TransformConfig(kind=transform)
        elif isinstance(transform, Mapping):
            transform = _nested(TransformConfig, transform, "transform")
        if not isinstance(transform, TransformConfig):
            raise ValueError(f"[exploration] transform must be a kind name or a table, got {transform!r}")
        object.__setattr__(self, "transform", transform)
        entries = []
        for i, entry in enumerate(self.mixed or ()):
            entries.append(_nested(MixedEntry, entry, f"mixed[{i}]") if isinstance(entry, Mapping) else entry)
        if not all(isinstance(e, MixedEntry) for e in entries):
            raise ValueError("[exploration] mixed must be a list of tables {strategy, temperature, n}")
        object.__setattr__(self, "mixed", tuple(entries))
        self._validate()

    def _validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"[exploration] strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        reason_template_text(self.reason_template)  # a built-in name or a template with {prompt}
        check_template("critique_template", self.critique_template, ("{prompt}", "{draft}"))
        check_template("revise_template", self.revise_template, ("{prompt}", "{draft}", "{critique}"))
        if isinstance(self.refine_rounds, bool) or not isinstance(self.refine_rounds, int) or self.refine_rounds < 1:
            raise ValueError(f"[exploration] refine_rounds must be an integer >= 1, got {self.refine_rounds!r}")
        for name in ("max_tokens", "tokens_budget_per_prompt"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"[exploration] {name} must be an integer >= 1 (or left out), got {value!r}")
        if self.strategy == "mixed" and not self.mixed:
            raise ValueError("[exploration] strategy 'mixed' needs [[exploration.mixed]] tables (strategy, n)")
        if self.strategy != "mixed" and self.mixed:
            raise ValueError(f"[exploration] mixed entries are only used by strategy 'mixed', not {self.strategy!r}")
        if self.tokens_budget_per_prompt is not None and self.strategy != "mixed":
            raise ValueError(
                f"[exploration] tokens_budget_per_prompt caps strategy 'mixed' only; strategy {self.strategy!r} spends "
                "n x max_tokens at most (set [exploration] max_tokens instead)"
            )

    def candidates_per_prompt(self, sampling_n: int) -> int:
        """Candidates each prompt gets: the entries' n summed for mixed, else [sampling].n."""
        return sum(e.n for e in self.mixed) if self.strategy == "mixed" else sampling_n

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> ExplorationConfig:
        """This config with a task's `[tasks.<name>.exploration]` keys replacing the run's (unknown keys: error)."""
        if not overrides:
            return self
        base = dataclasses.asdict(self)
        if overrides.get("strategy", "mixed") != "mixed":  # a task that leaves mixed leaves its entries behind
            base.pop("mixed")
            base.pop("tokens_budget_per_prompt")
        return dataclass_from_dict(ExplorationConfig, {**base, **dict(overrides)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExplorationConfig:
        return dataclass_from_dict(cls, d)


def _nested(cls: type, value: Mapping[str, Any], where: str) -> Any:
    try:
        return dataclass_from_dict(cls, value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"[exploration] {where}: {exc}") from None
