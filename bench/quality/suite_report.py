"""bench/results/quality.md and quality.json from the suite's finished cells, with PNG plots beside them.

quality.json: {"profile", "cpu", "tasks": {TASK: {"base", "sft", "bon_sft", "tao", "tao_n": {n: S},
"multitask_tao", "probe_verdict", "tuned_over_base_tok_s", ...}}} with S = {"mean", "sd", "seeds"}; the report
adds the probe's statistics, the diagnostics that explain each result, the targets met or not, and time per cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.quality.suite_plots import write_suite_plots
from bench.quality.suite_profiles import SuiteProfile
from bench.quality.suite_stats import S, SuiteResults, beyond, targets
from bench.quality.suite_tasks import CONTRAST_TASKS

METHOD_LABELS = {"base": "base", "sft": "SFT on gold", "bon_sft": "best-of-N SFT (label-free)",
                 "tao": "TAO + guards", "multitask": "multi-task TAO"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _fmt(s: S) -> str:
    if math.isnan(s["mean"]):
        return "-"
    seeds = ", ".join(f"{v:.3f}" for v in s["seeds"])
    return f"{s['mean']:.3f} ± {s['sd']:.3f} ({seeds})" if len(s["seeds"]) > 1 else f"{s['mean']:.3f}"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.{digits}f}"


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def suite_json(res: SuiteResults, profile: SuiteProfile) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in res.tasks:
        speed = res.speed(task)
        probe = res.probe(task)
        tasks[task] = {
            "base": res.accuracy(task, "base", 1)["mean"],
            "sft": res.accuracy(task, "sft", 1),
            "bon_sft": res.accuracy(task, "bon_sft", profile.n),
            "tao": res.accuracy(task, "tao", profile.n),
            "tao_n": {str(k): res.accuracy(task, "tao", k) for k in profile.samples},
            "multitask_tao": res.accuracy(task, "multitask", profile.n),
            "probe_verdict": probe["verdict"] if probe else None,
            "tuned_over_base_tok_s": speed["tok_s_ratio"] if speed else None,
            "contrast": task in CONTRAST_TASKS,
            "probe": probe,
            "diagnostics": diagnostics(res, task, profile.n),
        }
    return _json_ready({"profile": profile.name, "cpu": cpu_model(), "tasks": tasks,
                        "cell_seconds": sum(r.get("cell_s", 0.0) for r in res.records)})


def diagnostics(res: SuiteResults, task: str, n: int) -> dict[str, Any]:
    """Means over the TAO cells' training steps (and seeds) of the gold-checked diagnostics, plus what the guards
    decided: the best step kept and why a run stopped early."""
    cells = res.cells(task, "tao", n)
    steps = [h for r in cells for h in r.get("history", [])]

    def mean(key: str, rows=steps) -> float:
        values = [h[key] for h in rows if isinstance(h.get(key), (int, float)) and not math.isnan(h[key])]
        return sum(values) / len(values) if values else math.nan

    def reply_tokens(rows) -> float:  # mean tokens of the greedy test replies: a collapse to short answers shows here
        evals = [r["eval"] for r in rows if r.get("eval") and r["eval"].get("total")]
        return sum(e["completion_tokens"] / e["total"] for e in evals) / len(evals) if evals else math.nan

    firsts = [r["history"][0] for r in cells if r.get("history")]
    lasts = [r["history"][-1] for r in cells if r.get("history")]
    return {"pass_rate": mean("pass_rate"), "reward_pair_acc": mean("reward_pair_acc"),
            "reward_top_correct": mean("reward_top_correct"), "zero_variance_frac": mean("zero_variance_frac"),
            "entropy_first": mean("entropy", firsts), "entropy_last": mean("entropy", lasts),
            "pass_rate_first": mean("pass_rate", firsts), "pass_rate_last": mean("pass_rate", lasts),
            "reply_tokens_base": reply_tokens(res.cells(task, "base", 1)), "reply_tokens_tao": reply_tokens(cells),
            "best_steps": [r.get("best_step") for r in cells], "stopped": [r.get("stopped") for r in cells]}


def render(res: SuiteResults, profile: SuiteProfile, header: str, plots: Sequence[Path]) -> str:
    n = profile.n
    lines = [header, ""]
    lines += ["## Accuracy on the held-out test split (mean ± sd over seeds; per seed)", "",
              "| task | probe verdict (before training) | base | SFT on gold | best-of-N SFT | TAO + guards | "
              "multi-task TAO | TAO - base |", "|---|---|---|---|---|---|---|---|"]
    for task in res.tasks:
        probe = res.probe(task)
        base, tao = res.accuracy(task, "base", 1), res.accuracy(task, "tao", n)
        gain = tao["mean"] - base["mean"]
        mark = "" if math.isnan(gain) else (" (beyond 2 sd)" if beyond(tao, base) else " (within 2 sd)")
        name = f"{task} (below competence)" if task in CONTRAST_TASKS else task
        lines.append(f"| {name} | {probe['verdict'] if probe else '-'} | {_fmt(base)} | "
                     f"{_fmt(res.accuracy(task, 'sft', 1))} | {_fmt(res.accuracy(task, 'bon_sft', n))} | {_fmt(tao)} "
                     f"| {_fmt(res.accuracy(task, 'multitask', n))} | {_num(gain)}{mark} |")
    lines += ["", "A difference counts only beyond 2 sd: more than twice the larger seed spread of the two values "
              "compared (base is greedy and seed-independent).", "", "## Targets", "", "| target | met | numbers |",
              "|---|---|---|"]
    for target, met, numbers in targets(res, n, profile.samples):
        lines.append(f"| {target} | {'-' if met is None else 'yes' if met else '**no**'} | {numbers} |")
    lines += ["", "## Compute scaling: TAO with n samples per prompt, same steps", "",
              "| task | " + " | ".join(f"n={k}" for k in profile.samples) + " | generated tokens per cell (n="
              + "/".join(str(k) for k in profile.samples) + ") |",
              "|---|" + "---|" * (len(profile.samples) + 1)]
    for task in res.tasks:
        if not res.ns(task) or task in CONTRAST_TASKS:
            continue
        tokens = []
        for k in profile.samples:
            cells = res.cells(task, "tao", k)
            tokens.append(_num(sum(r.get("generated_tokens", 0) for r in cells) / max(1, len(cells)), 0))
        lines.append(f"| {task} | " + " | ".join(_fmt(res.accuracy(task, "tao", k)) for k in profile.samples)
                     + f" | {' / '.join(tokens)} |")
    lines += ["", f"## Why: diagnostics of the TAO cells (n = {n}; hidden gold, never seen by the scorers)", "",
              "pass rate = share of sampled training answers that are right (first step -> last); pair acc = how "
              "often the label-free reward ranks a right answer above a wrong one of the same group (0.5 = no "
              "signal); top right = groups whose top-rewarded answer is right; zero-var = groups with all rewards "
              "equal (no gradient); entropy = mean -log p of the sampled tokens, first step -> last; best step = "
              "the held-out label-free score's pick (final model), per seed; reply tokens = mean length of the greedy "
              "test replies, base -> TAO (a collapse to short answers that game the reward shows here).", "",
              "| task | pass rate | pair acc | top right | zero-var | entropy | reply tokens | best step | stopped "
              "early |", "|---|---|---|---|---|---|---|---|---|"]
    for task in res.tasks:
        d = diagnostics(res, task, n)
        stopped = [s for s in d["stopped"] if s]
        lines.append(f"| {task} | {_num(d['pass_rate_first'])} -> {_num(d['pass_rate_last'])} | "
                     f"{_num(d['reward_pair_acc'])} | {_num(d['reward_top_correct'])} | "
                     f"{_num(d['zero_variance_frac'])} | {_num(d['entropy_first'], 2)} -> "
                     f"{_num(d['entropy_last'], 2)} | {_num(d['reply_tokens_base'], 1)} -> "
                     f"{_num(d['reply_tokens_tao'], 1)} | {', '.join(str(b) for b in d['best_steps']) or '-'} | "
                     f"{'; '.join(stopped) if stopped else '-'} |")
    lines += ["", "## The readiness probe, per task (labeled probe split, before any training)", ""]
    for task in res.tasks:
        cells = res.cells(task, "probe")
        if cells:
            lines += [f"### {task}", "", "```", cells[0]["probe_text"], "```", ""]
    lines += ["## Inference cost: base vs tuned (LoRA merged into the base architecture)", "",
              "| task | base tok/s | tuned tok/s | tuned / base | parameters base / tuned |", "|---|---|---|---|---|"]
    for task in res.tasks:
        sp = res.speed(task)
        if sp:
            lines.append(f"| {task} | {_num(sp['tok_s_base'], 1)} | {_num(sp['tok_s_tuned'], 1)} | "
                         f"{_num(sp['tok_s_ratio'])} | {sp['params']['base']:,} / {sp['params']['tuned']:,} |")
    lines += ["", "## Time per cell", "", "| cell | wall seconds | CPU seconds |", "|---|---|---|"]
    for r in sorted(res.records, key=lambda r: (r["task"], r["method"], r["n"], r["seed"])):
        lines.append(f"| {r['task']}-{r['method']}-n{r['n']}-seed{r['seed']} | {r.get('cell_s', 0):.0f} | "
                     f"{_num(r.get('cpu_s'), 0)} |")
    wall = sum(r.get("cell_s", 0.0) for r in res.records)
    cpu = sum(r.get("cpu_s", 0.0) for r in res.records)
    lines += ["", f"Sum of cell times: {wall / 60:.1f} minutes of wall time, {cpu / 60:.1f} minutes of CPU time "
              "(cells run two at a time, one thread each: with the two cores to themselves, the suite takes about "
              "half the CPU time; wall time above that means the machine was shared).", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(lines)


def write_report(records: Sequence[Mapping[str, Any]], profile: SuiteProfile, out: Path,
                 header: str) -> tuple[Path, Path, list[Path]]:
    res = SuiteResults(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = write_suite_plots(res, profile, out)
    out.write_text(render(res, profile, header, plots), encoding="utf-8")
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(suite_json(res, profile), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return out, json_path, plots
