"""`tao-engine serve` as a process: it serves, logs, and when killed (SIGKILL, mid-traffic) the table still holds
every request a client got an answer for; SIGTERM stops it cleanly; a bad model directory is a clear error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tao_engine.serve import InferenceTable

REPO = Path(__file__).resolve().parents[2]


def _start(model_dir: Path, table: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tao_engine", "serve", "--model", str(model_dir), "--port", "0", "--table", str(table),
         "--max-num-seqs", "16"],
        cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"at (http://\S+)/v1", line)
        if match:
            return proc, match.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.stderr.read()}")


def test_killed_server_keeps_every_answered_request(tiny_dirs, tmp_path: Path):
    table = tmp_path / "infer.sqlite"
    proc, url = _start(tiny_dirs[0], table)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            i = 0
            while not stop.is_set():
                try:
                    r = client.post("/v1/completions", json={"prompt": f"client {c} #{i}", "max_tokens": 4})
                except httpx.HTTPError:
                    return  # the server was killed
                if r.status_code == 200:
                    with lock:
                        answered.append(r.json()["id"])
                i += 1

    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(6)]
    try:
        for t in threads:
            t.start()
        while len(answered) < 40 and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # requests are in flight and rows are being written
        proc.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert len(answered) >= 40
    with InferenceTable(table) as t:
        logged = {r.request_id for r in t.rows()}
    missing = set(answered) - logged
    assert not missing, f"{len(missing)} answered requests are missing from the table"


def test_sigterm_stops_the_server_cleanly(tiny_dirs, tmp_path: Path):
    proc, url = _start(tiny_dirs[0], tmp_path / "infer.sqlite")
    try:
        assert httpx.get(f"{url}/health", timeout=30).json()["model_version"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    with InferenceTable(tmp_path / "infer.sqlite") as t:
        assert [v for v, _, _ in t.model_versions()] == [1]


def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path):
    out = subprocess.run([sys.executable, "-m", "tao_engine", "serve", "--model", str(tmp_path / "nope"),
                          "--table", str(tmp_path / "t.sqlite")], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2
    assert "tao-engine serve: error:" in out.stderr and "nope" in out.stderr
