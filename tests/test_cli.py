"""The `tao-engine` command line: doctor's report and clear errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tao_engine.cli import main
from tao_engine.ops import all_ops


def test_doctor_lists_every_op_and_backend(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for needle in ("torch", "triton", "CUDA", "_C"):
        assert needle in out
    for name, op in all_ops().items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "runs on" not in line
        assert op.describe("cpu") in line.split()[-1]


def test_doctor_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "tao_engine", "doctor"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "token_logprobs" in out.stdout


def test_import_gguf_missing_file_is_a_clear_error(tmp_path: Path, capsys):
    code = main(["import-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing.gguf" in err
    assert not (tmp_path / "out").exists()


def test_chat_missing_model_dir_is_a_clear_error(tmp_path: Path, capsys):
    code = main(["chat", "--model", str(tmp_path / "nowhere"), "--prompt", "hi"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err
