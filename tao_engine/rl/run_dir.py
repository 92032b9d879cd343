"""One output directory holds one run.

A new run (no `--resume`) refuses a directory that already holds something, unless told to `overwrite`: then it
removes the previous run's files (checkpoints, final model, metrics, plots) and only those; a directory holding
anything tao did not write is refused even so, so a mistyped output_dir never deletes a user's files. Without this,
a second run overwrote `final/`, pruned the first run's checkpoints and appended its steps to the old metrics, and a
later `--resume` continued the old run with the old settings.

A resumed run must use the configuration its checkpoint was written with: any change is refused, naming the fields,
except for the fields in `RESUMABLE_FIELDS`, which change how long or how a run goes but not what it computes.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Section fields a resumed run may change: its length and checkpointing, how the work is batched and placed
# (results do not depend on them up to rounding), and how it is monitored. Everything else defines the run.
RESUMABLE_FIELDS = frozenset({
    "run.steps", "run.checkpoint_every", "run.keep_last", "run.eval_every", "run.eval_max_tokens", "run.output_dir",
    "engine.kv_cache_bytes", "engine.kv_cache_memory_fraction", "engine.max_num_seqs",
    "engine.max_num_batched_tokens", "engine.device", "engine.sampler_backend",
    "train.max_tokens_per_forward", "train.gradient_checkpointing",
    "distributed.strategy", "distributed.backend", "distributed.timeout_s",
    "probe.prompts", "probe.labeled", "probe.before_tune", "probe.on_no_go",  # the probe runs before step 1 only
})
# What a run writes into its output directory (tao_engine.rl.tao, checkpoint.py, metrics_log.py, atomic_dir.py).
_RUN_FILES = re.compile(r"^(checkpoint-\d+|final|final_adapter|metrics\.jsonl|probe\.json|tensorboard|[\w.-]+\.png"
                        r"|\.(checkpoint-\d+|final|final_adapter)\.(tmp|old)-.*)$")


def prepare_new_run_dir(run_dir: str | Path, overwrite: bool) -> None:
    """Refuse a non-empty `run_dir` (ValueError naming it and the way out); with `overwrite`, clear a previous
    run's files from it first (refused when it holds files a run does not write)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"[run] output_dir {run_dir} is a file; give a directory path")
    entries = sorted(run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return
    if not overwrite:
        names = ", ".join(p.name for p in entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise ValueError(f"[run] output_dir {run_dir} is not empty ({names}): pass --resume to continue that run, "
                         "--overwrite to replace it, or choose another --run.output_dir")
    foreign = [p.name for p in entries if not _RUN_FILES.match(p.name)]
    if foreign:
        raise ValueError(f"[run] output_dir {run_dir} holds files a tao run does not write ({', '.join(foreign[:4])}); "
                         "--overwrite only replaces a previous run: choose another --run.output_dir")
    for path in entries:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and prefix.count(".") < 1 and key != "tasks":
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any],
                   defaults: Mapping[str, Any] | None = None) -> list[str]:
    """`section.field: old -> new` for every field that differs and may not change on resume. A field the saved
    config lacks (added to tao since, or None) counts as its value in `defaults`."""
    old, new, default = _flatten(saved), _flatten(current), _flatten(defaults or {})
    changed = []
    for name in sorted(set(old) | set(new)):
        if name in RESUMABLE_FIELDS or old.get(name, default.get(name)) == new.get(name, default.get(name)):
            continue
        changed.append(f"{name}: {old.get(name, '(unset)')!r} -> {new.get(name, '(unset)')!r}")
    return changed


def check_resume_config(checkpoint: Path, saved: Mapping[str, Any], current: Mapping[str, Any],
                        defaults: Mapping[str, Any] | None = None) -> None:
    """ValueError naming the changed fields when the configuration is not the one `checkpoint` was written with."""
    if not saved:  # written by library code that passed no config: nothing to compare
        return
    changes = config_changes(saved, current, defaults)
    if changes:
        raise ValueError(
            f"--resume: the configuration differs from the one {checkpoint} was written with: {'; '.join(changes)}. "
            f"Resume with the run's settings, or start a new run (another --run.output_dir, or --overwrite). "
            f"Fields that may change on resume: {', '.join(sorted(RESUMABLE_FIELDS))}")
