"""Exploration for TAO: costly strategies spend test-time compute only while tuning, and the tuned model answers
directly at the base model's cost.

- `config.py`: `ExplorationConfig` (the `[exploration]` section), `TransformConfig`, `MixedEntry`.
- `templates.py`: reasoning / critique / revise prompt templates; `transforms.py`: output -> direct response.
- `strategies.py` (plain, reason), `refine.py` (draft, critique, revise), `explore.py` (dispatch and mixed budget).
- `candidate.py`: `Candidate`, one explored answer and how it was found.
- `to_rollouts.py`: candidates -> `Rollouts` under the inference-time prompt (and the off-policy choice).
- `tasks.py`: `[tasks.<name>]` tables and the prompt `task` check; `routing.py`: `TaskRouting`, the loop's hook.

Imports are lazy, like `tao_engine.rl`'s.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "tao_engine.rl.exploration.candidate",
    "ExplorationConfig": "tao_engine.rl.exploration.config",
    "MixedEntry": "tao_engine.rl.exploration.config",
    "TransformConfig": "tao_engine.rl.exploration.config",
    "STRATEGIES": "tao_engine.rl.exploration.config",
    "apply_transform": "tao_engine.rl.exploration.transforms",
    "explore": "tao_engine.rl.exploration.explore",
    "candidates_to_rollouts": "tao_engine.rl.exploration.to_rollouts",
    "TaskConfig": "tao_engine.rl.exploration.tasks",
    "TaskRouting": "tao_engine.rl.exploration.routing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tao_engine.rl.exploration' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
