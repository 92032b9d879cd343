"""Write a directory atomically (models, checkpoints, adapters, GGUF imports): fill a temporary directory beside the
target, then rename it into place.

A crash mid-write leaves only a hidden `.<name>.tmp-*` directory, never a half-written target; an existing target
is set aside and removed only once the new one is in place. (Same scheme as `tao_engine.models.saving`.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_prefix(name: str) -> str:
    """Prefix of the temporary directories written for target `name` (finders skip names starting with '.')."""
    return f".{name}.tmp-"


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on normal exit it replaces `target`, on an exception it is removed."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), dir=target.parent))
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(src: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(src, dst)
        return
    # os.replace cannot swap a directory onto a non-empty one: move the old one aside, then drop it after success.
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.rmdir(old)
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)
