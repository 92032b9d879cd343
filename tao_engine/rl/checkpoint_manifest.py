"""A checkpoint's manifest: the size and SHA-256 of every file it holds, written into `checkpoint.json` and checked
before anything is loaded, so a truncated `optimizer.pt` or an emptied `data_cursor.json` is an error naming that
file instead of a traceback from torch.load (or, worse, a half-restored model).

`resumable_checkpoints` lists a run's checkpoint directories newest first, complete or not, so that a resume can
fall back past a damaged newest one and say which it skipped and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^checkpoint-(\d+)$")
_CHUNK = 1 << 22


class CorruptCheckpoint(ValueError):
    """A checkpoint file is missing, truncated or changed; `file` names it."""

    def __init__(self, file: Path, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(directory: Path, skip: str) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory` but `skip` (the file holding it)."""
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name != skip:
            out[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return out


def read_meta(meta_path: Path) -> dict[str, Any]:
    """checkpoint.json as a dict, or CorruptCheckpoint naming it (missing, empty, truncated, not an object)."""
    if not meta_path.is_file():
        raise CorruptCheckpoint(meta_path, "missing: the checkpoint was not finished, or the file was deleted")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(meta_path, f"unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(meta_path, "not a JSON object")
    return meta


def verify_manifest(directory: Path, files: Any, meta_path: Path) -> None:
    """Every file the manifest lists exists with its size and digest; CorruptCheckpoint names the first that does
    not."""
    if not isinstance(files, Mapping) or not files:
        raise CorruptCheckpoint(meta_path, "its manifest ('files') is missing or empty")
    for name, expected in sorted(files.items()):
        path = directory / name
        if not isinstance(expected, Mapping) or not {"bytes", "sha256"} <= set(expected):
            raise CorruptCheckpoint(meta_path, f"its manifest entry for {name!r} is malformed")
        if not path.is_file():
            raise CorruptCheckpoint(path, "missing (listed in the checkpoint's manifest)")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptCheckpoint(path, f"{size} bytes, the manifest says {expected['bytes']} (truncated or "
                                          "replaced)")
        if _sha256(path) != expected["sha256"]:
            raise CorruptCheckpoint(path, "its SHA-256 differs from the manifest's (the file changed or is damaged)")


def read_json_file(path: Path) -> Any:
    """A checkpoint's JSON file, or CorruptCheckpoint naming it (for checkpoints from before manifests)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(path, f"unreadable ({exc})") from None


def resumable_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-<step>` directory of a run, newest first, whether complete or not."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), child) for child in run_dir.iterdir()
             if (m := _NAME.match(child.name)) and child.is_dir()]
    return sorted(found, reverse=True)
