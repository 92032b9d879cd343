"""Start ranks for the distributed tests, and make sure none outlives its timeout (the whole process group of a
launch is killed, torchrun's workers included).

`launch`: K ranks as plain subprocesses with the environment torchrun would give them; no torchrun agent kills the
others when one fails, so what stops them is tao_engine's own failure exchange. `torchrun`: the real launcher.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KILLED = -signal.SIGKILL


@dataclass
class RankResult:
    returncode: int  # KILLED when it was still running at the timeout
    output: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait(proc: subprocess.Popen, deadline: float) -> RankResult:
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process and any children (torchrun's workers)
        out, _ = proc.communicate()
        return RankResult(KILLED, out)
    return RankResult(proc.returncode, out)


def launch(args: list[str], world_size: int, timeout: float) -> tuple[list[RankResult], float]:
    """Run `python -m <args>` as ranks 0..world_size-1; each rank's exit code and output, and the seconds until the
    last one ended."""
    port = str(free_port())
    start = time.perf_counter()
    procs = [
        _start([sys.executable, "-m", *args], {"RANK": str(rank), "WORLD_SIZE": str(world_size),
                                               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world_size),
                                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        for rank in range(world_size)
    ]
    results = [_wait(proc, start + timeout) for proc in procs]
    return results, time.perf_counter() - start


def torchrun(args: list[str], nproc: int, timeout: float) -> RankResult:
    """`torchrun --standalone --nproc-per-node nproc -m <args>`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", *args]
    return _wait(_start(cmd, {}), time.perf_counter() + timeout)
