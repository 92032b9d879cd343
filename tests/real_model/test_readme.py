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


def test_readme_training_loop_runs_and_updates_the_model(smollm2_dir: Path):
    """The README's "inside your own training loop" block, on a fresh SmolLM2, one step: it runs as written, the
    weights move, and the engine it built keeps sampling from the same module."""
    import torch

    from tao_engine import load_pretrained

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    loop = next(b for b in blocks if "train_step(" in b)
    model, tokenizer = load_pretrained(smollm2_dir, dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    namespace = {
        "model": model,
        "tokenizer": tokenizer,
        "prompts": [[{"role": "user", "content": "What is 3 + 4? Answer with the number only."}],
                    [{"role": "user", "content": "Name a color."}]],
        "steps": 1,
    }
    exec(compile(loop, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["engine"].model is model
    assert namespace["stats"].optimizer_steps == 1
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "train_step left every parameter as it was"
