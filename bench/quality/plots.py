"""The PNG plots of the quality report: accuracy vs optimizer steps (SFT and TAO curves, base as a line), accuracy
vs TAO's samples per prompt at fixed steps, and (when the exploration cells ran) accuracy vs exploration tokens per
prompt for plain, reason and mixed exploration; one panel per task, mean over seeds with the min-max range."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.quality.report import (
    EXPLORATION_ROWS,
    LABELS,
    Results,
    exploration_tokens_per_prompt,
    has_exploration_cells,
)


def write_plots(records: Sequence[dict[str, Any]], report: Path, rules_n: int, judge_n: int) -> list[Path]:
    """[<stem>_vs_steps.png, <stem>_vs_samples.png (, <stem>_vs_exploration.png)] next to the report <stem>.md ([]
    without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    res = Results(records)
    if not res.tasks:
        return []
    report.parent.mkdir(parents=True, exist_ok=True)
    paths = [report.parent / f"{report.stem}_vs_{what}.png" for what in ("steps", "samples")]

    fig, panels = _figure(plt, res)
    for ax, task in panels:
        base = res.accuracies(task, "base", 1)
        if base:
            ax.axhline(statistics.fmean(base), color="gray", linestyle="--", label=LABELS["base"])
        for method, n in (("sft", 1), ("tao", rules_n), ("tao_judge", judge_n)):
            steps, mean, low, high = _curve(res.cells(task, method, n))
            if steps and base:  # every tuned run starts from the base model: its curve starts at step 0 there
                steps, mean = [0, *steps], [statistics.fmean(base), *mean]
                low, high = [min(base), *low], [max(base), *high]
            if steps:
                label = LABELS[method] + (f" (n={n})" if method != "sft" else "")
                ax.plot(steps, mean, marker="o", label=label)
                ax.fill_between(steps, low, high, alpha=0.2)
        ax.set(title=task, xlabel="optimizer steps", ylabel="test accuracy")
    _save(plt, fig, paths[0])

    fig, panels = _figure(plt, res)
    for ax, task in panels:
        ns = res.ns(task, "tao")
        accs = [res.accuracies(task, "tao", n) for n in ns]
        if ns:
            mean = [statistics.fmean(a) for a in accs]
            ax.errorbar(ns, mean, yerr=[[m - min(a) for m, a in zip(mean, accs, strict=True)],
                                        [max(a) - m for m, a in zip(mean, accs, strict=True)]],
                        marker="o", capsize=3, label=LABELS["tao"])
            ax.set_xscale("log", base=2)
            ax.set_xticks(ns, [str(n) for n in ns])
        for method, style in (("base", "--"), ("sft", ":")):
            values = res.accuracies(task, method, 1)
            if values:
                ax.axhline(statistics.fmean(values), color="gray" if method == "base" else "tab:green",
                           linestyle=style, label=LABELS[method])
        ax.set(title=task, xlabel="samples per prompt (n), fixed steps", ylabel="test accuracy")
    _save(plt, fig, paths[1])
    if has_exploration_cells(res, rules_n):
        paths.append(_exploration_plot(plt, res, report.parent / f"{report.stem}_vs_exploration.png", rules_n))
    return paths


def _exploration_plot(plt: Any, res: Results, path: Path, rules_n: int) -> Path:
    """Accuracy against the tokens spent exploring per prompt and step, one point per strategy (same steps, same n)."""
    fig, panels = _figure(plt, res)
    for ax, task in panels:
        for method, strategy in EXPLORATION_ROWS:
            cells = res.cells(task, method, rules_n)
            if not cells:
                continue
            tokens = exploration_tokens_per_prompt(cells)
            accs = [c["eval"]["accuracy"] for c in cells]
            mean = statistics.fmean(accs)
            ax.errorbar([tokens], [mean], yerr=[[mean - min(accs)], [max(accs) - mean]], marker="o", capsize=3,
                        label=f"{strategy} (n={rules_n})")
        base = res.accuracies(task, "base", 1)
        if base:
            ax.axhline(statistics.fmean(base), color="gray", linestyle="--", label=LABELS["base"])
        ax.set(title=task, xlabel="exploration tokens per prompt per step", ylabel="test accuracy (direct answers)")
    return _save(plt, fig, path)


def _figure(plt: Any, res: Results) -> tuple[Any, list[tuple[Any, str]]]:
    """A figure of one panel per task, side by side: (figure, [(axes, task)])."""
    fig, axes = plt.subplots(1, len(res.tasks), figsize=(5.5 * len(res.tasks), 3.8), squeeze=False)
    return fig, list(zip(axes[0], res.tasks, strict=True))


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Grid and legend on every panel, then the PNG written and the figure closed."""
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curve(cells: Sequence[dict[str, Any]]) -> tuple[list[int], list[float], list[float], list[float]]:
    by_step: dict[int, list[float]] = defaultdict(list)
    for cell in cells:
        for point in cell.get("curve", []):
            by_step[point["step"]].append(point["accuracy"])
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])
