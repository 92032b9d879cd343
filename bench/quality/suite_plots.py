"""The suite's PNG plots beside quality.md: per task, TAO's reward, policy entropy and held-out label-free score over
the training steps (mean over seeds, n = profile.n), and accuracy against samples per prompt with base and SFT as
lines. Nothing is drawn without matplotlib."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from bench.quality.suite_profiles import SuiteProfile
from bench.quality.suite_stats import SuiteResults
from bench.quality.suite_tasks import CONTRAST_TASKS

CURVES = (("reward_mean", "reward (label-free)"), ("entropy", "entropy (nats/token)"),
          ("guard/holdout_score", "held-out label-free score"))


def _curve(res: SuiteResults, task: str, n: int, key: str) -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for r in res.cells(task, "tao", n):
        for h in r.get("history", []):
            value = h.get(key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                by_step[h["step"]].append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def write_suite_plots(res: SuiteResults, profile: SuiteProfile, report: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    tasks = [t for t in res.tasks if res.cells(t, "tao")]
    if not tasks:
        return []
    paths = [report.parent / f"{report.stem}_curves.png", report.parent / f"{report.stem}_vs_samples.png"]
    fig, axes = plt.subplots(len(CURVES), len(tasks), figsize=(3.6 * len(tasks), 2.6 * len(CURVES)), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (key, label) in enumerate(CURVES):
            ax = axes[row][col]
            steps, values = _curve(res, task, profile.n, key)
            if steps:
                ax.plot(steps, values, marker="o", markersize=3)
            ax.set_title(task if row == 0 else "", fontsize=9)
            ax.set_ylabel(label if col == 0 else "", fontsize=8)
            ax.set_xlabel("step" if row == len(CURVES) - 1 else "", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    competence = [t for t in tasks if t not in CONTRAST_TASKS]
    fig, axes = plt.subplots(1, max(1, len(competence)), figsize=(3.6 * max(1, len(competence)), 3.0), squeeze=False)
    for ax, task in zip(axes[0], competence, strict=False):
        ks = [k for k in profile.samples if res.cells(task, "tao", k)]
        acc = [res.accuracy(task, "tao", k) for k in ks]
        ax.errorbar(ks, [a["mean"] for a in acc], yerr=[a["sd"] for a in acc], marker="o", capsize=3, label="TAO")
        for method, style in (("base", ":"), ("sft", "--")):
            value = res.accuracy(task, method, 1)["mean"]
            if not math.isnan(value):
                ax.axhline(value, linestyle=style, color="grey", label=method)
        ax.set_xscale("log", base=2)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("samples per prompt (n)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
