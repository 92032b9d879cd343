"""Tests import the installed package (issue 23 item 9): the repository root is not on sys.path, so its top-level
kernels/ folder (the Triton sources, installed as tao_engine.kernels) cannot shadow the PyPI package `kernels` that
transformers >= 5.25 imports, and `tests` and `bench` import from their own folders only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_repository_root_is_not_searched_for_top_level_modules():
    assert all(Path(p or ".").resolve() != REPO for p in sys.path)
    spec = importlib.util.find_spec("kernels")  # absent, or the PyPI package: never the repository's folder
    # (the venv may live inside the repository: what matters is that the repository's own kernels/ is not it)
    assert spec is None or Path(spec.origin or "").resolve().parent != REPO / "kernels"
    assert importlib.util.find_spec("tao_engine.kernels") is not None  # the Triton sources, as installed


def test_tests_import_as_a_package_from_their_folder():
    from tests import helpers

    assert Path(helpers.__file__).resolve().parent == REPO / "tests"
