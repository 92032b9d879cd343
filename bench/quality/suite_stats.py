"""The suite's numbers from its cell records: accuracy per (task, method, n) over seeds as S = {mean, sd, seeds},
the "a difference counts only beyond 2 sd" rule, and the targets of the TAO-quality issue, each met or not."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from bench.quality.suite_cells import MULTITASK
from bench.quality.suite_tasks import CONTRAST_TASKS

S = dict[str, Any]  # {"mean": float, "sd": float, "seeds": [float, ...]}


def summary(values: Sequence[float]) -> S:
    if not values:
        return {"mean": math.nan, "sd": math.nan, "seeds": []}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": list(values)}


def beyond(a: S, b: S) -> bool:
    """a and b differ by more than twice the larger of their seed spreads (a seedless value has no spread)."""
    if math.isnan(a["mean"]) or math.isnan(b["mean"]):
        return False
    return abs(a["mean"] - b["mean"]) > 2 * max(a["sd"], b["sd"])


class SuiteResults:
    """Cell records grouped by (task, method, n); a multi-task record counts once per task it evaluated."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.records = list(records)
        self.by: dict[tuple[str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
        for r in self.records:
            if r["task"] == MULTITASK:
                for task in (r.get("evals") or {}):
                    self.by[(task, "multitask", r["n"])].append(r)
            else:
                self.by[(r["task"], r["method"], r["n"])].append(r)
        self.tasks = sorted({k[0] for k in self.by}, key=_task_order)

    def accuracy(self, task: str, method: str, n: int) -> S:
        cells = sorted(self.by.get((task, method, n), []), key=lambda r: r["seed"])
        if method == "multitask":
            return summary([r["evals"][task]["accuracy"] for r in cells])
        return summary([r["eval"]["accuracy"] for r in cells if r.get("eval")])

    def cells(self, task: str, method: str, n: int | None = None) -> list[Mapping[str, Any]]:
        return [r for (t, m, k), rs in self.by.items() if t == task and m == method and (n is None or k == n)
                for r in rs]

    def ns(self, task: str) -> list[int]:
        return sorted({k for (t, m, k) in self.by if t == task and m == "tao"})

    def probe(self, task: str) -> Mapping[str, Any] | None:
        found = self.cells(task, "probe")
        return found[0]["probe"] if found else None

    def speed(self, task: str) -> Mapping[str, Any] | None:
        found = self.cells(task, "speed")
        return found[0] if found else None


def _task_order(task: str) -> tuple[int, str]:
    return (1 if task in CONTRAST_TASKS else 0, task)


def targets(res: SuiteResults, n: int, samples: Sequence[int]) -> list[tuple[str, bool | None, str]]:
    """(target, met (None: not measured), the numbers) for each target of the issue."""
    competence = [t for t in res.tasks if t not in CONTRAST_TASKS]
    rows: list[tuple[str, bool | None, str]] = []
    base = {t: res.accuracy(t, "base", 1) for t in res.tasks}
    tao = {t: res.accuracy(t, "tao", n) for t in res.tasks}
    sft = {t: res.accuracy(t, "sft", 1) for t in competence}
    gains = {t: tao[t]["mean"] - base[t]["mean"] for t in competence}
    big = [t for t in competence if gains[t] >= 0.20 and beyond(tao[t], base[t])]
    rows.append(("TAO >= 20 points above base on at least 3 of the 4 tasks", len(big) >= 3 if competence else None,
                 ", ".join(f"{t} {gains[t]:+.3f}" for t in competence)))
    half = [t for t in competence if sft[t]["mean"] - base[t]["mean"] <= 0
            or gains[t] >= 0.5 * (sft[t]["mean"] - base[t]["mean"])]
    rows.append(("TAO reaches at least half of SFT's gain over base on every task", len(half) == len(competence),
                 ", ".join(f"{t} TAO {gains[t]:+.3f} vs SFT {sft[t]['mean'] - base[t]['mean']:+.3f}"
                           for t in competence)))
    measured_both = [t for t in competence if not (math.isnan(tao[t]["mean"]) or math.isnan(sft[t]["mean"]))]
    match = [t for t in measured_both if tao[t]["mean"] >= sft[t]["mean"] or not beyond(tao[t], sft[t])]
    rows.append(("TAO matches SFT (within 2 sd) or beats it on at least two tasks", len(match) >= 2,
                 ", ".join(match) or "none"))
    rising = []
    for t in competence:
        curve = [res.accuracy(t, "tao", k)["mean"] for k in samples]
        rising.append(all(b >= a for a, b in zip(curve, curve[1:], strict=False)) and curve[-1] > curve[0])
    rows.append(("Accuracy rises with n from 2 to 16", all(rising) if competence else None,
                 "; ".join(f"{t}: " + " / ".join(f"{res.accuracy(t, 'tao', k)['mean']:.3f}" for k in samples)
                           for t in competence)))
    multi = {t: res.accuracy(t, "multitask", n) for t in competence}
    measured = [t for t in competence if not math.isnan(multi[t]["mean"])]
    rows.append(("Multi-task TAO improves every task over base",
                 all(multi[t]["mean"] > base[t]["mean"] and beyond(multi[t], base[t]) for t in measured)
                 if measured else None,
                 ", ".join(f"{t} {multi[t]['mean'] - base[t]['mean']:+.3f}" for t in measured) or "not run"))
    verdicts = {t: (res.probe(t) or {}).get("verdict") for t in res.tasks}
    agree = []
    for t in res.tasks:
        if verdicts[t] is None:
            continue
        if t in CONTRAST_TASKS:  # below the model's competence by construction: any "go" is wrong
            agree.append(verdicts[t] != "go")
        elif not math.isnan(tao[t]["mean"]):
            agree.append((verdicts[t] == "go") == (beyond(tao[t], base[t]) and tao[t]["mean"] > base[t]["mean"]))
    rows.append(("The probe's verdict matches the outcome", all(agree) if agree else None,
                 ", ".join(f"{t}: {verdicts[t]}" for t in res.tasks)))
    ratios = {t: (res.speed(t) or {}).get("tok_s_ratio") for t in competence}
    known = {t: r for t, r in ratios.items() if r is not None}
    rows.append(("The tuned model's inference cost equals the base's within 10%",
                 all(0.9 <= r <= 1.1 for r in known.values()) if known else None,
                 ", ".join(f"{t} {r:.3f}" for t, r in known.items()) or "not run"))
    return rows
