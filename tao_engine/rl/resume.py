"""Which checkpoint a resumed run continues from: the newest intact one, after checking that the configuration is
the one it was written with. Damaged newer checkpoints are skipped loudly, never silently (a deleted checkpoint.json
or a truncated optimizer.pt used to fall back without a word, or end in a traceback)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tao_engine.rl.checkpoint import LoadedCheckpoint
from tao_engine.rl.checkpoint_manifest import CorruptCheckpoint, read_json_file, resumable_checkpoints
from tao_engine.rl.run_dir import check_resume_config


def load_newest_intact(run_dir: str | Path, config: Mapping[str, Any], defaults: Mapping[str, Any],
                       load: Callable[[Path], LoadedCheckpoint], announce: bool) -> LoadedCheckpoint | None:
    """`load(path)` on the newest checkpoint of `run_dir` that is intact; None when the run has none at all.

    A checkpoint whose files fail their manifest (CorruptCheckpoint, raised before anything is loaded) is skipped
    with a warning on stderr (when `announce`); when every one is damaged, a ValueError lists them. A configuration
    that differs from the checkpoint's in a field that may not change is a ValueError naming the fields."""
    damaged: list[str] = []
    for _, path in resumable_checkpoints(run_dir):
        try:
            check_resume_config(path, read_json_file(path / "run_config.json"), config, defaults)
            loaded = load(path)
        except CorruptCheckpoint as exc:
            damaged.append(str(exc))
            if announce:
                print(f"tao: WARNING: {path.name} cannot be resumed: {exc}", file=sys.stderr)
            continue
        if damaged and announce:
            print(f"tao: WARNING: resuming from {path.name} (step {loaded.step}), the newest intact checkpoint; "
                  f"{len(damaged)} newer one(s) skipped", file=sys.stderr)
        return loaded
    if damaged:
        raise ValueError(f"--resume: no intact checkpoint in {run_dir} ({'; '.join(damaged)}); start the run over "
                         "with --overwrite")
    return None
