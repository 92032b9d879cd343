"""Multi-task TAO: `[tasks.<name>]` tables, and the check that every prompt's `task` is one of them.

    [tasks.sql]
    combine = "weighted_sum"          # optional; default the run's [scoring] combine / on_error
    [[tasks.sql.scorers]]             # optional; default the run's [scoring] scorers
    name = "sql"
    [tasks.sql.exploration]           # optional; keys replace the run's [exploration] for this task's prompts
    strategy = "reason"
    transform = "final_sql"

A prompt selects its task with a `"task"` key in the prompts file. With tasks configured every prompt needs one that
is configured; without tasks, no prompt may name one. Errors name the task and the file line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tao_engine.rl.exploration.config import ExplorationConfig

COMBINE_MODES = ("weighted_sum", "normalize_then_sum", "sum_then_normalize")
ON_ERROR_MODES = ("raise", "none")


@dataclass(frozen=True)
class TaskConfig:
    scorers: tuple[Mapping[str, Any], ...] = ()  # empty = the run's [scoring] scorers
    combine: str | None = None  # None = the run's [scoring] combine
    on_error: str | None = None  # None = the run's [scoring] on_error
    exploration: Mapping[str, Any] | None = None  # overrides of the run's [exploration]
    evaluator: str | None = None  # how this task's eval lines are checked (see [run] evaluator); None = the run's

    def __post_init__(self) -> None:
        if isinstance(self.scorers, Mapping) or not isinstance(self.scorers, (list, tuple)):
            raise ValueError(f"scorers must be a list of tables ([[tasks.<name>.scorers]]), got {self.scorers!r}")
        if not all(isinstance(s, Mapping) for s in self.scorers):
            raise ValueError("scorers must be a list of scorer tables ([[tasks.<name>.scorers]])")
        object.__setattr__(self, "scorers", tuple(dict(s) for s in self.scorers))
        if self.combine is not None and self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")
        if self.on_error is not None and self.on_error not in ON_ERROR_MODES:
            raise ValueError(f"on_error must be one of {ON_ERROR_MODES}, got {self.on_error!r}")
        if self.evaluator is not None:
            from tao_engine.rl.evaluators import EVALUATORS

            if self.evaluator not in EVALUATORS:
                raise ValueError(f"evaluator must be one of {EVALUATORS}, got {self.evaluator!r}")
        if self.exploration is not None:
            if not isinstance(self.exploration, Mapping):
                raise ValueError(f"exploration must be a table of [exploration] keys, got {self.exploration!r}")
            object.__setattr__(self, "exploration", dict(self.exploration))
            ExplorationConfig().with_overrides(self.exploration)  # unknown or bad keys fail now, not mid-run


def tasks_from_dict(table: Mapping[str, Any]) -> dict[str, TaskConfig]:
    """The `[tasks]` table -> {name: TaskConfig}; errors name the task."""
    from tao_engine.config_dict import dataclass_from_dict

    if not isinstance(table, Mapping):
        raise ValueError(f"tao config: [tasks] must be a table of [tasks.<name>] tables, got {type(table).__name__}")
    out: dict[str, TaskConfig] = {}
    for name, body in table.items():
        if not isinstance(body, Mapping):
            raise ValueError(f"tao config [tasks.{name}]: must be a table, got {type(body).__name__}")
        try:
            out[name] = dataclass_from_dict(TaskConfig, body)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"tao config [tasks.{name}]: {exc}") from None
    return out


def check_record_tasks(records: Sequence[Any], tasks: Mapping[str, Any], what: str = "prompts") -> None:
    """Every record's `task` must be configured (or, with no tasks configured, absent)."""
    for i, record in enumerate(records):
        task = getattr(record, "task", None)
        where = getattr(record, "source", None) or f"{what}[{i}]"
        if task is None:
            if tasks:
                raise ValueError(
                    f"{where}: the prompt has no 'task' but the config defines tasks {sorted(tasks)}; give each "
                    "prompt a \"task\" key"
                )
        elif task not in tasks:
            known = f"the configured tasks are {sorted(tasks)}" if tasks else "the config has no [tasks] tables"
            raise ValueError(f"{where}: task {task!r} is not configured ({known}); add a [tasks.{task}] table")
