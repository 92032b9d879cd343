"""The readiness probe: before spending compute on tuning, sample candidates for some prompts exactly as the run
would (its generation settings, exploration and scorers), and tell the user whether label-free RL can work there.

    report = tao.probe()                       # a TAO object's own engine, scorers and settings
    print(report.text())                       # the statistics and a verdict: go / weak / no-go, reasons, fixes

`tao-engine probe --config tao.toml` prints the same; `tune` runs a short probe first ([probe] before_tune). The
statistics are in tao_engine.rl.readiness.statistics and the verdict's rules in tao_engine.rl.readiness.verdict.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tao_engine.rl.guards.answers import answer_keys
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.readiness.statistics import labeled_statistics, unlabeled_statistics
from tao_engine.rl.readiness.verdict import Verdict, verdict

# (records) -> those records' candidates, scored as the run scores them: Rollouts with rewards, scorer_rewards and
# answers set; prompt_indices name the records kept.
SampleAndScore = Callable[[Sequence[Any]], Any]
# (completion text, its labeled record) -> right or not
IsCorrect = Callable[[str, Any], bool]


@dataclass(frozen=True)
class ProbeReport:
    verdict: Verdict
    unlabeled: dict[str, Any]
    labeled: dict[str, Any] | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**self.verdict.as_dict(), "unlabeled": _finite(self.unlabeled), "labeled": _finite(self.labeled),
                "seconds": self.seconds}

    def text(self) -> str:
        u, lab = self.unlabeled, self.labeled
        q = u["majority_share_quartiles"]
        scorers = " | ".join(f"{name}: mean {s['mean']:.2f}, pass {s['pass_rate']:.0%}"
                             for name, s in u["scorers"].items()) or "-"
        lines = [
            f"readiness probe: {u['prompts']} prompts x {u['n']} samples ({self.seconds:.0f} s)",
            f"  reward          mean {u['reward_mean']:.3f}  std {u['reward_std']:.3f}  no score {u['none_frac']:.0%}",
            f"  groups          equal rewards {u['zero_variance_frac']:.0%}  carrying a gradient "
            f"{u['gradient_groups_frac']:.0%}",
            f"  votes           top-answer share {u['majority_share_mean']:.2f}"
            + (f" (quartiles {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f})" if q else "")
            + f"  distinct answers {u['distinct_answers_frac']:.2f} of n  no answer {u['no_answer_frac']:.0%}",
            f"  across prompts  one answer tops {u['dominant_answer_share']:.0%} of prompts  answer entropy "
            f"{u['answer_entropy']:.2f}",
            f"  scorers         {scorers}",
        ]
        if lab is not None:
            greedy = f"  greedy {lab['greedy_accuracy']:.2f}" if "greedy_accuracy" in lab else ""
            lines.append(f"  labeled         pass@1 {lab['pass_at_1']:.2f}  pass@{lab['k']} {lab['pass_at_k']:.2f}  "
                         f"maj@{lab['k']} {lab['maj_at_k']:.2f}{greedy}  reward pair accuracy "
                         f"{lab['pair_accuracy']:.2f} ({lab['pairs']} pairs)  top-rewarded right "
                         f"{lab['top_reward_correct']:.2f}")
        return "\n".join(lines) + "\n" + self.verdict.text()

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def choose_prompts(records: Sequence[Any], count: int, seed: int) -> list[Any]:
    """A seeded sample of `count` records (all of them when there are fewer), in their file order."""
    if count >= len(records):
        return list(records)
    picked = sorted(random.Random(seed).sample(range(len(records)), count))
    return [records[i] for i in picked]


def run_probe(sample_and_score: SampleAndScore, records: Sequence[Any], guards: GuardsSection, *,
              votes_matter: bool, is_correct: IsCorrect | None = None,
              greedy: Callable[[Sequence[Any]], list[str]] | None = None) -> ProbeReport:
    """Probe `records` (already chosen, label-free prompts). With `is_correct` every candidate is also checked
    against its record's label (the records are then the labeled probe set); `greedy` (records -> one greedy reply
    each) adds the greedy accuracy."""
    start = time.perf_counter()
    batch = sample_and_score(records)
    if batch.num_prompts == 0:
        raise ValueError(f"probe: none of the {len(records)} prompts could run (each longer than the engine's "
                         "context with max_tokens); shorten them or raise [engine] max_model_len / kv_cache_bytes")
    kept = [records[i] for i in (batch.prompt_indices or range(batch.num_prompts))]
    keys = answer_keys(batch.completion_texts, guards.answer, batch.answers)
    rewards = batch.rewards or [[None] * len(g) for g in batch.completion_texts]
    unlabeled = unlabeled_statistics(rewards, keys, batch.scorer_rewards, guards)
    labeled = None
    if is_correct is not None:
        correct = [[is_correct(text, record) for text in group]
                   for group, record in zip(batch.completion_texts, kept, strict=True)]
        greedy_correct = None
        if greedy is not None:
            greedy_correct = [is_correct(text, record) for text, record in zip(greedy(kept), kept, strict=True)]
        labeled = labeled_statistics(rewards, keys, correct, greedy_correct)
    return ProbeReport(verdict(unlabeled, labeled, votes_matter), unlabeled, labeled, time.perf_counter() - start)


def strip_labels(records: Sequence[Any], label_keys: Sequence[str] = ("answer",)) -> list[Any]:
    """The records with their label keys taken out of the context, so that no label reaches a scorer."""
    return [dataclasses.replace(r, context={k: v for k, v in r.context.items() if k not in label_keys})
            for r in records]


def _finite(value: Any) -> Any:
    """NaN -> None, recursively, so the report is valid JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
