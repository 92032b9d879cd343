"""Exploration for TAO: costly strategies spend test-time compute only while tuning, and the tuned model answers
directly at the base model's cost.

- `config.py`: `ExplorationConfig` (the `[exploration]` section), `TransformConfig`, `MixedEntry`.
- `templates.py`: reasoning / critique / revise prompt templates; `transforms.py`: output -> direct response.
- `strategies.py` (plain, reason), `refine.py` (draft, critique, revise), `explore.py` (dispatch and mixed budget).
- `candidate.py`: `Candidate`, one explored answer and how it was found.
- `to_rollouts.py`: candidates -> `Rollouts` under the inference-time prompt (and the off-policy choice).
- `tasks.py`: `[tasks.<name>]` tables and the prompt `task` check; `routing.py`: `TaskRouting`, the loop's hook.
"""

from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.config import STRATEGIES, ExplorationConfig, MixedEntry, TransformConfig
from tao_engine.rl.exploration.explore import explore
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.exploration.tasks import TaskConfig
from tao_engine.rl.exploration.to_rollouts import candidates_to_rollouts
from tao_engine.rl.exploration.transforms import apply_transform

__all__ = [
    "STRATEGIES",
    "Candidate",
    "ExplorationConfig",
    "MixedEntry",
    "TaskConfig",
    "TaskRouting",
    "TransformConfig",
    "apply_transform",
    "candidates_to_rollouts",
    "explore",
]
