"""Fixtures for the GGUF importer tests.

- The real SmolLM2 fixtures (`smollm2_gguf`, `smollm2_import`, `smollm2_dir`) live in tests/conftest.py.
- `tiny_gguf`: a factory for tiny synthetic GGUF files (see synthetic.py) in the test's tmp dir.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gguf_import.synthetic import TinyModel, write_tiny_gguf


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Callable[..., TinyModel]:
    """`tiny_gguf(name="tiny.gguf", **write_tiny_gguf kwargs)` -> TinyModel in this test's tmp dir."""
    return lambda name="tiny.gguf", **kw: write_tiny_gguf(tmp_path / name, **kw)
