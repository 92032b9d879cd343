"""bench/results/quality.md from the finished cells: the method x task table (accuracy mean +- sd over seeds),
compute scaling, the inference cost, the diagnostics of every TAO cell, factual verdict lines, and two PNG plots
(quality vs steps, quality vs samples per prompt) next to the markdown file."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LABELS = {"base": "base (prompted)", "sft": "SFT on gold labels", "tao": "TAO, rule scorers",
          "tao_judge": "TAO, LLM judge (same model)", "tao_reason": "TAO, rule scorers, reason exploration",
          "tao_mixed": "TAO, rule scorers, mixed exploration"}
EXPLORATION_ROWS = (("tao", "plain"), ("tao_reason", "reason"), ("tao_mixed", "mixed"))
EXPLORED = tuple(m for m, _ in EXPLORATION_ROWS[1:])  # the methods that explore beyond plain sampling


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _fmt(values: Sequence[float]) -> str:
    m, sd = mean_sd(values)
    if math.isnan(m):
        return "-"
    per_seed = ", ".join(f"{v:.3f}" for v in values)
    return f"{m:.3f} ± {sd:.3f} ({per_seed})" if len(values) > 1 else f"{m:.3f} ({per_seed})"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.{digits}f}"


class Results:
    """The cell records grouped by (task, method, n)."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        self.groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            self.groups[(r["task"], r["method"], r["n"])].append(r)
        self.tasks = sorted({r["task"] for r in records})

    def cells(self, task: str, method: str, n: int | None = None) -> list[dict[str, Any]]:
        if n is not None:
            return sorted(self.groups.get((task, method, n), []), key=lambda r: r["seed"])
        return [r for (t, m, _), rs in self.groups.items() if t == task and m == method for r in rs]

    def ns(self, task: str, method: str) -> list[int]:
        return sorted({n for (t, m, n) in self.groups if t == task and m == method})

    def accuracies(self, task: str, method: str, n: int) -> list[float]:
        return [r["eval"]["accuracy"] for r in self.cells(task, method, n)]

    def speed(self, task: str) -> dict[str, Any] | None:
        cells = self.cells(task, "speed")
        return cells[0] if cells else None


def has_exploration_cells(res: Results, rules_n: int) -> bool:
    return any(res.cells(task, m, rules_n) for task in res.tasks for m in EXPLORED)


def exploration_tokens_per_prompt(cells: Sequence[dict[str, Any]]) -> float:
    """Tokens generated per prompt per step while exploring (reasoning included), the mean over steps and seeds."""
    return statistics.fmean(h.get("generated_tokens", 0) / c["prompts_per_step"] for c in cells for h in c["history"])


def main_rows(res: Results, rules_n: int, judge_n: int) -> list[tuple[str, str, int]]:
    rows = []
    for task in res.tasks:
        for method, n in (("base", 1), ("sft", 1), ("tao", rules_n), ("tao_judge", judge_n)):
            if res.cells(task, method, n):
                rows.append((task, method, n))
    return rows


def render(records: Sequence[dict[str, Any]], rules_n: int, judge_n: int, plots: Sequence[Path],
           header: str) -> str:
    res = Results(records)
    out = [header, "", "## Accuracy on the held-out test questions", "",
           "| task | method | accuracy (mean ± sd over seeds; per seed) | seeds | n | steps | train s | tok/s |",
           "|---|---|---|---|---|---|---|---|"]
    for task, method, n in main_rows(res, rules_n, judge_n):
        cells = res.cells(task, method, n)
        speed = res.speed(task)
        tok_s = "-"
        if speed is not None and method == "base":
            tok_s = f"{speed['tok_s_base']:.1f}"
        elif speed is not None and method == "tao" and n == rules_n:
            tok_s = f"{speed['tok_s_tuned']:.1f}"
        train_s = statistics.fmean(c["train_s"] for c in cells)
        out.append(f"| {task} | {LABELS[method]} | {_fmt(res.accuracies(task, method, n))} | {len(cells)} | {n} | "
                   f"{cells[0]['steps']} | {train_s:.0f} | {tok_s} |")
    total_min = sum(r.get("cell_s", 0.0) for r in records) / 60
    out += ["", "Base is greedy and seed-independent: it runs once per task. "
            f"Time of all {len(records)} cells (model loads, tuning, evaluations): {total_min:.0f} minutes.", ""]
    out += verdicts(res, rules_n, judge_n)
    out += scaling_section(res)
    out += exploration_section(res, rules_n)
    out += speed_section(res)
    out += diagnostics_section(res)
    out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(out) + "\n"


def verdicts(res: Results, rules_n: int, judge_n: int) -> list[str]:
    """Factual comparisons: a difference counts only when it exceeds both methods' seed spread."""
    lines = ["## What came out", ""]
    for task in res.tasks:
        base = res.accuracies(task, "base", 1)
        for method, n in (("tao", rules_n), ("tao_judge", judge_n)):
            tao = res.accuracies(task, method, n)
            if not tao:
                continue
            for other, values in (("base", base), ("SFT", res.accuracies(task, "sft", 1))):
                if values:
                    lines.append(f"- {task}: {LABELS[method]} vs {other}: {_compare(tao, values)}")
            lines.append(f"- {task}: {LABELS[method]} (n={n}), why: {_why(res.cells(task, method, n))}")
        ns = res.ns(task, "tao")
        if len(ns) > 1:
            means = [mean_sd(res.accuracies(task, "tao", k))[0] for k in ns]
            rising = all(b > a for a, b in zip(means, means[1:], strict=False))
            shape = "rises monotonically" if rising else "does not rise monotonically"
            points = ", ".join(f"n={k}: {m:.3f}" for k, m in zip(ns, means, strict=True))
            lines.append(f"- {task}: accuracy vs samples per prompt at fixed steps {shape} ({points})")
        plain = res.accuracies(task, "tao", rules_n)
        for method in EXPLORED:
            explored = res.accuracies(task, method, rules_n)
            if explored and plain:
                lines.append(f"- {task}: {LABELS[method]} vs plain exploration (n={rules_n}): "
                             f"{_compare(explored, plain)}")
        speed = res.speed(task)
        if speed is not None:
            same = "the same cost within 10%" if abs(speed["tok_s_ratio"] - 1) <= 0.1 else "a gap beyond 10%: noise?"
            lines.append(f"- {task}: inference tuned / base = {speed['tok_s_ratio']:.3f} tok/s ({same})")
    return lines + [""]


def _why(cells: Sequence[dict[str, Any]]) -> str:
    """The diagnostics that explain a TAO result, in words."""
    def avg(key: str) -> float:
        values = [c["diagnostics"].get(key, math.nan) for c in cells]
        values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        return statistics.fmean(values) if values else math.nan

    pair = avg("reward_pair_acc")
    signal = ("no pair to judge (no or only correct answers sampled)" if math.isnan(pair)
              else f"the reward ranks a correct answer above a wrong one in {pair:.0%} of pairs (50% = chance)")
    return (f"{signal}; its top pick is correct in {avg('reward_top_correct'):.0%} of groups vs a "
            f"{avg('pass_rate'):.0%} pass rate; {avg('zero_variance_frac'):.0%} of groups gave no gradient (all "
            f"rewards equal); entropy {avg('entropy_first'):.2f} -> {avg('entropy_last'):.2f} nats/token")


def _compare(a: Sequence[float], b: Sequence[float]) -> str:
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    diff = ma - mb
    noise = max(sa, sb)
    if abs(diff) <= noise or diff == 0:
        return f"{diff:+.3f}, within the seed spread ({noise:.3f}): no difference shown"
    return f"{diff:+.3f} ({'better' if diff > 0 else 'worse'}; seed spread {noise:.3f})"


def scaling_section(res: Results) -> list[str]:
    lines = ["## Compute scaling: TAO with n samples per prompt, same steps", "",
             "| task | n | accuracy (mean ± sd; per seed) | train s | generated tokens / step | pass rate (train) |",
             "|---|---|---|---|---|---|"]
    for task in res.tasks:
        for n in res.ns(task, "tao"):
            cells = res.cells(task, "tao", n)
            gen = statistics.fmean(h.get("generated_tokens", 0) for c in cells for h in c["history"])
            train_s = statistics.fmean(c["train_s"] for c in cells)
            pass_rate = statistics.fmean(c["diagnostics"]["pass_rate"] for c in cells)
            lines.append(f"| {task} | {n} | {_fmt(res.accuracies(task, 'tao', n))} | {train_s:.0f} | {gen:.0f} | "
                         f"{pass_rate:.3f} |")
    return lines + [""]


def exploration_section(res: Results, rules_n: int) -> list[str]:
    """Issue 11's row: plain vs reason vs mixed exploration at equal steps and n, against exploration compute."""
    if not has_exploration_cells(res, rules_n):
        return []
    lines = [f"## Exploration compute: plain vs reason vs mixed (TAO, rule scorers, n={rules_n}, same steps)", "",
             "Exploration tokens = tokens generated per prompt per step while exploring (reasoning included); "
             "trained = tokens of the direct responses the update trains per step; answer tokens = mean length of "
             "the tuned model's greedy test answers (its own inference cost per question); tok/s = the first "
             "seed's tuned model, merged, over the base model's.", "",
             "| task | exploration | accuracy (mean ± sd; per seed) | exploration tokens / prompt | trained tokens / "
             "step | answer tokens | train s | tuned / base tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for task in res.tasks:
        speed = res.speed(task)
        base = res.cells(task, "base", 1)
        if base:
            answer = base[0]["eval"]["completion_tokens"] / max(1, base[0]["eval"]["total"])
            lines.append(f"| {task} | none (base) | {_fmt(res.accuracies(task, 'base', 1))} | 0 | 0 | {answer:.1f} "
                         "| 0 | 1 |")
        for method, strategy in EXPLORATION_ROWS:
            cells = res.cells(task, method, rules_n)
            if not cells:
                continue
            explored = exploration_tokens_per_prompt(cells)
            trained = statistics.fmean(h.get("trained_tokens", math.nan) for c in cells for h in c["history"])
            answer = statistics.fmean(c["eval"]["completion_tokens"] / max(1, c["eval"]["total"]) for c in cells)
            train_s = statistics.fmean(c["train_s"] for c in cells)
            tuned = (speed or {}).get("tuned", {}).get(method)
            ratio = f"{tuned['tok_s_ratio']:.3f}" if tuned else "-"
            lines.append(f"| {task} | {strategy} | {_fmt(res.accuracies(task, method, rules_n))} | {explored:.0f} | "
                         f"{_num(trained, 0)} | {answer:.1f} | {train_s:.0f} | {ratio} |")
    return lines + [""]


def speed_section(res: Results) -> list[str]:
    lines = ["## Inference cost: base vs tuned (LoRA merged into the base architecture)", "",
             "| task | tuned by | base tok/s | tuned tok/s | tuned / base | parameters base | parameters tuned |",
             "|---|---|---|---|---|---|---|"]
    for task in res.tasks:
        s = res.speed(task)
        if s is None:
            continue
        for method, t in s["tuned"].items():
            lines.append(f"| {task} | {LABELS[method]} | {s['tok_s_base']:.1f} | {t['tok_s']:.1f} | "
                         f"{t['tok_s_ratio']:.3f} | {s['params_base']:,} | {t['params']:,} |")
    lines += ["", "Greedy decoding of the test prompts, every answer forced to the same length, base and tuned "
              "alternated twice (best run each): the same architecture and size, so the same cost within noise.", ""]
    return lines


def diagnostics_section(res: Results) -> list[str]:
    lines = ["## Why: label-free reward against the hidden gold (TAO cells, mean over steps and seeds)", "",
             "pass rate = correct share of the sampled training answers; reward pair acc = how often the reward "
             "ranks a correct answer above a wrong one of the same group (0.5 = no signal); top correct = share of "
             "groups whose best-rewarded answer is correct; zero-var = groups whose rewards are all equal (no "
             "gradient); entropy = mean -log p of sampled tokens, first step -> last step (for reason and mixed "
             "exploration: of the transformed direct responses under the inference-time prompt, which the model did "
             "not sample there, so a high value is their distance from what it would say directly); judge "
             "unreadable = share of judge answers with no score.", "",
             "| task | method | n | pass rate | reward pair acc (pairs) | top correct | zero-var | reward | entropy | "
             "judge unreadable |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in res.tasks:
        for method in ("tao", "tao_judge", *EXPLORED):
            for n in res.ns(task, method):
                d = [c["diagnostics"] for c in res.cells(task, method, n)]

                def avg(key: str, diags: list[dict[str, Any]] = d) -> float:
                    values = [x[key] for x in diags if isinstance(x.get(key), (int, float)) and not math.isnan(x[key])]
                    return statistics.fmean(values) if values else math.nan

                pairs = sum(x.get("reward_pairs", 0) for x in d)
                lines.append(
                    f"| {task} | {LABELS[method]} | {n} | {_num(avg('pass_rate'))} | "
                    f"{_num(avg('reward_pair_acc'))} ({pairs:.0f}) | {_num(avg('reward_top_correct'))} | "
                    f"{_num(avg('zero_variance_frac'))} | {_num(avg('reward_mean'))} | "
                    f"{_num(avg('entropy_first'), 2)} -> {_num(avg('entropy_last'), 2)} | "
                    f"{_num(avg('judge_none_frac'))} |")
    return lines + [""]


def summary_ratios(records: Sequence[dict[str, Any]], rules_n: int) -> dict[str, float]:
    """For the closing JSON line: accuracy differences and the inference-cost ratio per task."""
    res = Results(records)
    out: dict[str, float] = {}
    for task in res.tasks:
        tao = mean_sd(res.accuracies(task, "tao", rules_n))[0]
        for other in ("base", "sft"):
            ref = mean_sd(res.accuracies(task, other, 1))[0]
            if not math.isnan(tao) and not math.isnan(ref):
                out[f"{task}/tao_minus_{other}"] = tao - ref
        s = res.speed(task)
        if s is not None:
            out[f"{task}/tuned_over_base_tok_s"] = s["tok_s_ratio"]
    return out
