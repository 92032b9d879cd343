"""Without the compiled extension (TAO_BUILD_EXT=0) the package still installs and every op runs its reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose import system refuses `tao_engine._C`, as if it had never been built.
_NO_EXTENSION = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class BlockCompiledExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tao_engine._C":
                raise ModuleNotFoundError("No module named 'tao_engine._C'", name=name)
            return None

    sys.meta_path.insert(0, BlockCompiledExtension())

    import torch
    from tao_engine import ops
    from tao_engine.ops.extension import extension_status
    from tao_engine.ops.registry import BackendUnavailableError, all_ops

    assert not extension_status()[0]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 129, generator=gen)
    targets = torch.randint(0, 129, (7,), generator=gen)
    out = ops.token_logprobs(logits, targets, 0.7)
    ref = torch.log_softmax(logits.double() / 0.7, -1).gather(-1, targets[:, None]).squeeze(-1)
    from tests.tolerances import check
    check("token_logprobs", out, ref, logits=logits, targets=targets, temperature=0.7)
    assert all_ops()["token_logprobs"].describe("cpu") == "torch"
    try:
        ops.token_logprobs(logits, targets, 0.7, backend="cpp")
    except BackendUnavailableError as exc:
        print(exc)
    else:
        raise AssertionError("backend='cpp' ran without tao_engine._C")
    """
)


def test_ops_fall_back_to_torch_and_cpp_explains_how_to_build():
    done = subprocess.run([sys.executable, "-c", _NO_EXTENSION], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert "backend 'cpp' is not available" in message
    assert "tao_engine._C is not built" in message
    assert "pip install --no-build-isolation -e ." in message


def test_wheel_without_extension_holds_the_python_package_and_kernels(tmp_path):
    # Build from a copy so the build's scratch files never touch the checkout (other builds may run there).
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for name in ("tao_engine", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    env = {**os.environ, "TAO_BUILD_EXT": "0"}
    command = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path)]
    done = subprocess.run([*command, str(src)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = tmp_path.glob("tao_engine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tao_engine/kernels/__init__.py" in names
    assert "tao_engine/ops/logprobs.py" in names
    assert not [n for n in names if n.startswith("kernels/")], "kernels/ must install as tao_engine.kernels only"
    assert not [n for n in names if "/_C" in n and n.endswith((".so", ".pyd"))], "TAO_BUILD_EXT=0 built _C anyway"
