"""`RunGuards`: the guards as the TAO loop uses them, so that the loop calls them in four places and never branches
on which guard is on:

    train, holdout = guards.split_holdout(records, seed)       # unlabeled prompts kept out of training
    batch, metrics, stop = guards.apply(batch, step)           # group filter, advantage scale, collapse, warm-up
    train_step(..., guards.train_config(step, default))        # best-of-N SFT during the format warm-up
    metrics, is_best, stop = guards.record_holdout(step, score) # label-free early stopping, best step

and saves `state()` into every checkpoint (restored by `load_state`), so a resumed run guards as the uninterrupted
one would.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.holdout import HoldoutScore, HoldoutTracker
from tao_engine.rl.guards.runner import StepGuards


class RunGuards:
    def __init__(self, config: GuardsSection, rule_labels: Iterable[str] = ()) -> None:
        self.config = config
        self.step_guards = StepGuards(config, rule_labels)
        self.tracker = HoldoutTracker(config.patience, config.min_entropy)

    # ---- data -------------------------------------------------------------------------------------------------

    def split_holdout(self, records: Sequence[Any], seed: int) -> tuple[list[Any], list[Any]]:
        """(training records, held-out records): `holdout_prompts` of them, drawn with `seed`, never trained on."""
        return split_holdout(records, self.config.holdout_prompts, seed)

    # ---- each step --------------------------------------------------------------------------------------------

    def apply(self, batch: Any, step: int) -> tuple[Any, dict[str, float], str | None]:
        return self.step_guards.apply(batch, step)

    def train_config(self, step: int, default: Any) -> Any:
        """The update's TrainConfig at `step`: best-of-N SFT during the format warm-up, else `default`."""
        if not self.step_guards.in_warmup(step):
            return default
        return dataclasses.replace(default, algorithm=AlgorithmConfig(name="bon_sft"))

    def set_probe_baseline(self, answer_entropy: float) -> None:
        """The cross-prompt answer entropy the readiness probe measured: the collapse guard's baseline."""
        if not math.isnan(answer_entropy):
            self.step_guards.baseline_entropy = answer_entropy

    # ---- held-out label-free score --------------------------------------------------------------------------------

    def holdout_due(self, step: int) -> bool:
        return self.config.tracks_holdout and step % self.config.holdout_every == 0

    def record_holdout(self, step: int, result: HoldoutScore) -> tuple[dict[str, float], bool, str | None]:
        is_best, stop = self.tracker.record(step, result)
        best = self.tracker.best
        metrics = {**result.as_metrics(), "guard/holdout_best_step": float(best["step"]) if best else math.nan}
        return metrics, is_best, stop

    @property
    def best_step(self) -> int | None:
        best = self.tracker.best
        return None if best is None else int(best["step"])

    # ---- checkpoints ------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-ready (NaN as None) state for a checkpoint's run_state."""
        return _json_ready({"tracker": self.tracker.state(), "step_guards": self.step_guards.state()})

    def load_state(self, state: Mapping[str, Any], step: int) -> None:
        state = _from_json(state)
        self.tracker.load_state(state.get("tracker", {}), up_to_step=step)
        self.step_guards.load_state(state.get("step_guards", {}))


def split_holdout(records: Sequence[Any], count: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(training records, `count` held-out records drawn with `seed`), both in their original order."""
    if not count:
        return list(records), []
    if count >= len(records):
        raise ValueError(f"[guards] holdout_prompts = {count} leaves no prompt to train on ({len(records)} prompts); "
                         "hold out fewer")
    held = set(random.Random(seed).sample(range(len(records)), count))
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    """None scores back to NaN inside the tracker's evaluations."""
    if isinstance(value, Mapping):
        out = {k: _from_json(v) for k, v in value.items()}
        if "evaluations" in out:
            out["evaluations"] = [{k: (math.nan if v is None else v) for k, v in e.items()}
                                  for e in out["evaluations"]]
        return out
    return value
