"""bench/aot_check.py: every Triton kernel compiled ahead of time for sm_90 at the launchers' choices, no spill.

The fast subset (SmolLM2 shapes in bf16, the main RL settings, one CUDA file) runs the script in a subprocess without
TRITON_INTERPRET, which tests/conftest.py sets for this process: the kernel modules must be imported with it unset.
The full table (three models, two dtypes, sm_90 / sm_100 / gfx942) is `python bench/aot_check.py`, committed in
bench/results/aot-<target>.md.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "aot_check.py"
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.triton


def _launched_kernels() -> set[str]:
    """`module._kernel` for every kernel a launcher in kernels/ launches (`name[grid](...)`), read from the source."""
    found = set()
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.endswith("_kernel")):
                found.add(f"{path.stem}.{node.func.value.id}")
    return found


def test_quick_subset_compiles_every_kernel_for_sm90_without_spills(tmp_path: Path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--targets", "sm90", "--quick", "--cuda-sources", "kv_cache.cu", "--jobs", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    (result,) = summary["results"]
    assert result["target"] == "sm90" and result["failed"] == 0 and result["spilling"] == 0, result
    assert summary["commit"] is None or len(summary["commit"]) == 40
    report = (tmp_path / "aot-sm90-quick.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    kernels = {line.split("|")[1].strip() for line in rows}
    missing = _launched_kernels() - kernels
    assert not missing, f"kernels never compiled by the quick cases: {sorted(missing)}"
    assert "write_kv_cache_kernel" in report  # the CUDA table
    assert all("| ok |" in line for line in rows if line.split("|")[1].strip() in kernels - {"kernel", "file"})


def test_parsers_read_the_tools_reports():
    from aot_compile import parse_cuobjdump, parse_ptxas_report

    dump = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _rms_norm_fwd_kernel:
  REG:32 STACK:8 SHARED:1024 LOCAL:4 CONSTANT[0]:592 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert parse_cuobjdump(dump) == [{"name": "_rms_norm_fwd_kernel", "REG": 32, "STACK": 8, "SHARED": 1024,
                                      "LOCAL": 4}]
    log = """ptxas info    : Compiling entry function 'k' for 'sm_90'
ptxas info    : Function properties for k
    16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers
"""
    assert parse_ptxas_report(log) == {"k": (16, 12, 8)}
    with pytest.raises(ValueError, match="spill stores"):
        parse_ptxas_report("ptxas info: nothing")


def test_a_spill_or_too_much_shared_memory_fails_the_row():
    from aot_compile import TARGETS, Resources

    sm90 = TARGETS["sm90"]
    clean = Resources(regs=128, spills=0, stack=0, shared=sm90.shared_limit, local=0, note="")
    assert clean.problems(sm90) == []
    assert Resources(128, 8, 8, 0, 0, "").problems(sm90) == ["spills"]
    assert Resources(128, 0, 0, 0, 16, "").problems(sm90) == ["spills"]  # local memory is spilled registers too
    assert Resources(128, 0, 0, sm90.shared_limit + 1, 0, "").problems(sm90) == [
        f"shared {sm90.shared_limit + 1} > {sm90.shared_limit}"]
