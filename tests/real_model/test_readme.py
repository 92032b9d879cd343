"""The README's Python example runs as written (on the bundled SmolLM2) and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path: Path, smollm2_gguf: Path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no Python example"
    env = {**os.environ, "TAO_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert len(lines) >= 9  # the greedy answer, then one line per sample
    assert (tmp_path / "out" / "smollm2-copy" / "config.json").is_file()
