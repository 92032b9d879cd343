"""Label-free early stopping: the held-out tracker's best step, patience and entropy floor, its checkpoint state,
and the run-level split of held-out prompts and the warm-up's training config."""

from __future__ import annotations

import json
import math

import pytest

from tao_engine.rl.guards import HoldoutScore, RunGuards
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.holdout import HoldoutTracker
from tao_engine.rl.trainer import TrainConfig


def _score(value: float, entropy: float = 1.0) -> HoldoutScore:
    return HoldoutScore(score=value, consistency=0.5, entropy=entropy)


def test_patience_counts_evaluations_below_the_best():
    tracker = HoldoutTracker(patience=2)
    assert tracker.record(1, _score(0.3)) == (True, None)
    assert tracker.record(2, _score(0.5)) == (True, None)
    assert tracker.record(3, _score(0.4)) == (False, None)
    is_best, stop = tracker.record(4, _score(0.45))
    assert not is_best and "stayed below its best (0.5000 at step 2) for 2 evaluations" in stop
    assert tracker.best["step"] == 2


def test_entropy_floor_stops_and_nan_scores_are_never_best():
    tracker = HoldoutTracker(min_entropy=0.2)
    assert tracker.record(1, _score(math.nan)) == (False, None)
    is_best, stop = tracker.record(2, _score(0.1, entropy=0.05))
    assert is_best and "entropy fell to 0.050" in stop


def test_run_guards_state_survives_json_and_drops_evaluations_after_the_checkpoint():
    guards = RunGuards(GuardsSection(holdout_prompts=2, patience=3, keep_best=True))
    for step, value in ((1, 0.2), (2, math.nan), (3, 0.6), (4, 0.1)):
        guards.record_holdout(step, _score(value))
    state = json.loads(json.dumps(guards.state(), allow_nan=False))  # a checkpoint's run_state is strict JSON
    resumed = RunGuards(GuardsSection(holdout_prompts=2, patience=3, keep_best=True))
    resumed.load_state(state, step=2)  # resumed from checkpoint-2: later evaluations are redone
    assert [e["step"] for e in resumed.tracker.evaluations] == [1, 2]
    assert math.isnan(resumed.tracker.evaluations[1]["score"]) and resumed.best_step == 1
    full = RunGuards(GuardsSection(holdout_prompts=2, patience=3, keep_best=True))
    full.load_state(state, step=4)
    assert full.best_step == 3


def test_holdout_split_is_seeded_disjoint_and_refuses_to_hold_out_everything():
    guards = RunGuards(GuardsSection(holdout_prompts=3))
    records = list(range(10))
    train, held = guards.split_holdout(records, seed=7)
    assert len(held) == 3 and sorted(train + held) == records and not set(train) & set(held)
    assert guards.split_holdout(records, seed=7) == (train, held)
    assert RunGuards(GuardsSection()).split_holdout(records, seed=7) == (records, [])
    with pytest.raises(ValueError, match="holdout_prompts = 3 leaves no prompt"):
        guards.split_holdout(records[:3], seed=7)


def test_warmup_trains_best_of_n_sft_then_the_configured_algorithm():
    guards = RunGuards(GuardsSection(warmup_steps=2), rule_labels=["format"])
    default = TrainConfig()
    assert guards.train_config(1, default).algorithm.name == "bon_sft"
    assert guards.train_config(2, default).algorithm.name == "bon_sft"
    assert guards.train_config(3, default) is default
    with pytest.raises(ValueError, match="at least one rule scorer"):
        RunGuards(GuardsSection(warmup_steps=1), rule_labels=[])
