"""Output paths checked before any work: a command that writes files refuses a bad path while it costs nothing,
not after loading the model and generating everything (`generate --output` at a folder used to fail at the very end
and leave `<output>.tmp` behind)."""

from __future__ import annotations

import os
from pathlib import Path


def _writable_ancestor(path: Path, what: str) -> None:
    """The nearest existing ancestor of `path` is a directory this process may write into."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{what} {path}: {ancestor} is a file, not a directory; choose another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: no permission to write in {ancestor}; choose another path")


def check_output_file(path: str | Path, what: str) -> Path:
    """`path` can be written as a file, atomically through `<path>.tmp` (ValueError naming `what` otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file path")
    tmp = path.with_name(path.name + ".tmp")
    if tmp.is_dir():
        raise ValueError(f"{what} {path}: {tmp} (its temporary file) is a directory; remove it or choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{what} {path}: the file exists and is not writable")
    _writable_ancestor(path, what)
    return path


def check_output_dir(path: str | Path, what: str) -> Path:
    """`path` is, or can be created as, a directory to write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file; give a directory path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {path}: no permission to write in it")
    else:
        _writable_ancestor(path, what)
    return path
