"""`StepGuards`: the guards of one TAO run, applied to each scored batch between scoring and the update.

    guards = StepGuards(config.guards, rule_labels)
    batch, metrics, stop = guards.apply(batch, step)  # rewards filtered or replaced, advantage_scale set
    train_step(...)  # with the warm-up's TrainConfig (best-of-N SFT) while guards.in_warmup(step)

Whatever is configured, every step logs the vote diagnostics (`guard/majority_share`, `guard/distinct_answers`,
`guard/no_answer_frac`, `guard/dominant_answer_share`, `guard/answer_entropy`), so an unguarded run still shows a
vote locking in or one answer taking over.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from tao_engine.rl.guards.answers import answer_keys
from tao_engine.rl.guards.collapse import check_collapse
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.group_filter import shape_groups
from tao_engine.rl.guards.warmup import warmup_rewards


class StepGuards:
    def __init__(self, guards: GuardsSection, rule_labels: Iterable[str] = ()) -> None:
        self.config = guards
        self.rule_labels = set(rule_labels)
        if guards.warmup_steps and not self.rule_labels:
            warmup_rewards([], [], guards.warmup_pass)  # raises the error that names the fix
        self.baseline_entropy: float | None = None  # cross-prompt answer entropy: the probe's, else step 1's

    def in_warmup(self, step: int) -> bool:
        return step <= self.config.warmup_steps

    def apply(self, batch: Any, step: int) -> tuple[Any, dict[str, float], str | None]:
        """(the batch to train on, the step's guard metrics, why to stop the run now or None)."""
        g = self.config
        keys = answer_keys(batch.completion_texts, g.answer, batch.answers)
        if self.in_warmup(step):
            rules = [sorted(self.rule_labels & set(per)) for per in batch.scorer_rewards or []]
            rewards = [warmup_rewards([per], labels, g.warmup_pass)[0]
                       for per, labels in zip(batch.scorer_rewards or [], rules, strict=True)]
            passed = [r for row in rewards for r in row]
            metrics = {"guard/warmup": 1.0,
                       "guard/warmup_pass_frac": sum(r is not None for r in passed) / max(1, len(passed)),
                       "guard/warmup_groups": float(sum(any(r is not None for r in row) for row in rewards))}
            return dataclasses.replace(batch, rewards=rewards), metrics, None
        shaped = shape_groups(batch.rewards or [], keys, g)
        if self.baseline_entropy is None and g.collapse_entropy_ratio > 0:
            from tao_engine.rl.guards.collapse import cross_prompt_answers

            first = cross_prompt_answers(shaped.votes).answer_entropy
            self.baseline_entropy = None if math.isnan(first) else first
        collapse = check_collapse(shaped.rewards, keys, shaped.votes, g, self.baseline_entropy)
        votes = shaped.votes
        metrics = {
            "guard/warmup": 0.0,
            "guard/majority_share": _mean(v.share for v in votes),
            "guard/distinct_answers": _mean(v.distinct for v in votes),
            "guard/no_answer_frac": _mean((v.size - v.answered) / max(1, v.size) for v in votes),
            "guard/dominant_answer_share": collapse.answers.dominant_share,
            "guard/skipped_unclear": float(shaped.skipped_unclear),
            "guard/skipped_polarized": float(shaped.skipped_polarized),
            "guard/collapse": float(collapse.collapsing),
            "guard/penalized_samples": float(collapse.penalized_samples),
        }
        if not math.isnan(collapse.answers.answer_entropy):  # undefined below two answered prompts: not logged
            metrics["guard/answer_entropy"] = collapse.answers.answer_entropy
        stop = None
        if collapse.collapsing and g.collapse_action == "stop":
            stop = (f"cross-prompt collapse: one answer is the majority answer of "
                    f"{collapse.answers.dominant_share:.0%} of the step's prompts (answer entropy "
                    f"{collapse.answers.answer_entropy:.2f}); [guards] collapse_action = \"stop\"")
        out = dataclasses.replace(batch, rewards=collapse.rewards, advantage_scale=shaped.advantage_scale)
        return out, metrics, stop

    def state(self) -> dict[str, Any]:
        return {"baseline_entropy": self.baseline_entropy}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.baseline_entropy = state.get("baseline_entropy")


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan
