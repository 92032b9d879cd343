"""`rounds.json`: the flywheel's record of every finished round, beside the round directories.

    {"version": 1, "rounds": [{"round_id": "round-1", "index": 1, "started_at": ..., "finished_at": ...,
                               "base_model": DIR, "model_dir": DIR, "steps": 10, "num_prompts": 12,
                               "rows_used": [row ids], "reward_first": 0.1, "reward_last": 0.4}, ...]}

Written atomically (a temporary file beside it, fsynced, renamed over it): a reader sees the old or the new list,
never half of one. A round appears here only once its model directory is in place and its rows are marked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "rounds.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class RoundRecord:
    round_id: str
    index: int  # 1, 2, ...: the k of round-<k>
    started_at: float
    finished_at: float
    base_model: str  # the weights the round started from
    model_dir: str  # the round's tuned model (HF layout): what `serve` reloads
    steps: int
    num_prompts: int  # distinct prompts (hashes) the round trained on
    rows_used: list[int] = field(default_factory=list)  # table row ids marked with this round
    reward_first: float | None = None
    reward_last: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoundRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def manifest_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / MANIFEST_NAME


def read_rounds(output_dir: str | Path) -> list[RoundRecord]:
    """The finished rounds in order; [] when no round finished yet."""
    path = manifest_path(output_dir)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}); restore it or move it away to start over") from None
    if not isinstance(data, dict):
        data = {}
    rounds = data.get("rounds")
    if data.get("version") != MANIFEST_VERSION or not isinstance(rounds, list):
        raise ValueError(f"{path}: expected {{'version': {MANIFEST_VERSION}, 'rounds': [...]}}")
    return [RoundRecord.from_dict(r) for r in rounds]


def append_round(output_dir: str | Path, record: RoundRecord) -> Path:
    """Add `record` to the manifest (atomically); a round id already there is an error."""
    rounds = read_rounds(output_dir)
    if any(r.round_id == record.round_id for r in rounds):
        raise ValueError(f"{manifest_path(output_dir)}: round {record.round_id!r} is already recorded")
    rounds.append(record)
    data = {"version": MANIFEST_VERSION, "rounds": [asdict(r) for r in rounds]}
    return _write_atomic(manifest_path(output_dir), data)


def _write_atomic(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
