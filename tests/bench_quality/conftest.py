"""These tests import the quality benchmark's code as `bench.quality`. pytest leaves the repository root off sys.path
(pyproject.toml: its kernels/ folder would shadow the PyPI package `kernels`), so `bench` alone is imported from the
root here, by the same path finder an import would use, and registered under its name."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

if "bench" not in sys.modules:
    spec = importlib.machinery.PathFinder.find_spec("bench", [str(REPO)])
    if spec is None:
        raise ImportError(f"no bench/ folder in {REPO}")
    sys.modules["bench"] = importlib.util.module_from_spec(spec)
