"""Why a TAO cell learns or not, measured against the hidden gold while it trains: `GoldDiagnostics` wraps the
label-free scorer that TAO calls (through `LabelFreeScorer`, which refuses any label in its context) and, after each
call on training prompts, checks the candidates against the bench's gold. The scores it returns are the label-free
scorer's, untouched: the gold is read only to measure.

Per training step: pass_rate (share of sampled candidates that are right), reward_pair_acc (over right/wrong pairs
of one group, the share the reward ranks right above wrong, ties half), reward_top_correct (groups whose top-rewarded
candidate is right) and entropy (mean -log p of the sampled tokens under the raw model: a collapse drives it to 0).
Calls on the held-out prompts (the guards' label-free score) are not training steps and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.quality.records import LabelFreeScorer


class GoldDiagnostics:
    def __init__(self, scorers: Mapping[str, Any], tasks: Mapping[str, Any], examples: Mapping[str, tuple[str, Any]],
                 skip_qids: Sequence[str] = (), gold_sql: Sequence[str] = ()) -> None:
        """scorers / tasks: by task name (the label-free composite and the SuiteTask); examples: qid -> (task name,
        Example); skip_qids: prompts whose calls are not training steps (held out); gold_sql: every gold query, which
        `LabelFreeScorer` refuses to see in a prompt or context."""
        self.guards = {name: LabelFreeScorer(scorer, gold_sql) for name, scorer in scorers.items()}
        self.tasks = dict(tasks)
        self.examples = examples
        self.skip = set(skip_qids)
        self.steps: list[dict[str, Any]] = []
        # What the TAO loop reads of a composite (rule scorers for the warm-up, whether votes matter): every task's.
        self.entries = [e for scorer in scorers.values() for e in getattr(scorer, "entries", ())]

    def score_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any) -> Any:
        qids = list(context["qid"])
        tasks = {self.examples[q][0] for q in qids}
        if len(tasks) != 1:
            raise ValueError(f"GoldDiagnostics: one call mixes tasks {sorted(tasks)}; the loop scores task by task")
        task = tasks.pop()
        report = self.guards[task].score_groups(prompts, groups, **context)
        if not set(qids) & self.skip:
            self.steps.append(self._measure(task, qids, groups, report.scores, context.get("logprobs")))
        return report

    def _measure(self, task: str, qids: Sequence[str], groups: Sequence[Sequence[str]],
                 rewards: Sequence[Sequence[float | None]], logprobs: Any) -> dict[str, float]:
        check = self.tasks[task]
        correct = [[check.is_correct(text, self.examples[q][1].gold, self.examples[q][1].record.context)
                    for text in group] for q, group in zip(qids, groups, strict=True)]
        wins, pairs, top = 0.0, 0, 0
        for right, row in zip(correct, rewards, strict=True):
            values = [-math.inf if r is None else r for r in row]
            top += right[max(range(len(values)), key=values.__getitem__)]
            for a, ok_a in enumerate(right):
                for b, ok_b in enumerate(right):
                    if ok_a and not ok_b:
                        pairs += 1
                        wins += 1.0 if values[a] > values[b] else 0.5 if values[a] == values[b] else 0.0
        flat = [c for row in correct for c in row]
        tokens = [lp for group in (logprobs or []) for sample in group for lp in sample]
        return {"task": task, "pass_rate": sum(flat) / max(1, len(flat)),
                "reward_pair_acc": wins / pairs if pairs else math.nan, "reward_pairs": float(pairs),
                "reward_top_correct": top / max(1, len(correct)),
                "entropy": -sum(tokens) / len(tokens) if tokens else math.nan}
