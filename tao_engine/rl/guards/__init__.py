"""Guards for label-free RL (see config.py for the `[guards]` section): group filter and advantage reshaping
(group_filter.py), cross-prompt collapse (collapse.py), format warm-up (warmup.py), label-free early stopping and
best-checkpoint selection on held-out prompts (holdout.py); `RunGuards` (loop.py) is what the TAO loop calls."""

from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.holdout import HoldoutScore, holdout_score
from tao_engine.rl.guards.loop import RunGuards

__all__ = ["GuardsSection", "HoldoutScore", "RunGuards", "holdout_score"]
