"""bench/bench_tune_memory.py (issue 23 item 8) runs a real tune of the bundled SmolLM2 and reports each phase's time
and peak resident memory; its smoke run covers every phase and ends with the JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_tune_memory.py"


@pytest.mark.slow
def test_the_quick_run_reports_every_phase(smollm2_gguf):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.strip().splitlines()[-1])
    phases = line["results"][0]["phases"]
    for name in ("load model", "step 1 generate", "step 1 score", "step 1 update", "eval after + final/"):
        assert phases[name]["mb"] > 0, name
    assert phases["step 1 update"]["mb"] >= phases["load model"]["mb"]  # the model stays resident
    assert line["results"][0]["peak_mb"] < 4096  # the bound, at the smoke run's size
