"""linear_logprobs, forward + backward: naive torch (F.linear + log_softmax + gather, autograd) vs the `cpp` backend.

Shape of a small-model RL step: hidden [N, H] and LM head [V, H], fp32, both requiring grad (N=4096, V=49152, H=576,
SmolLM2's head). Reports the median time of forward + backward, the GEMM FLOP/s it implies (naive: three GEMMs of
2*N*V*H FLOP; cpp: four, as it recomputes the logits in the backward) beside the speed of one such GEMM alone (the
ceiling), and the peak memory of one forward + backward.

Peak memory is measured, not estimated: each provider runs once in a fresh child process that builds the inputs,
resets the kernel's resident-set high-water mark (/proc/self/clear_refs, Linux), runs forward + backward and reads
VmHWM; the figure is that peak minus the resident set before the call (so it counts the outputs and gradients, ~0.1
GiB of grad_weight for both). The bench fails if the cpp peak is above 1/8 of the naive one (issue 5's goal).
Ends with one JSON line. Run: .venv/bin/python bench/bench_linear_logprobs.py [--rows 4096] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402

PROVIDERS = ("torch (naive)", "cpp")
MAX_MEMORY_RATIO = 1 / 8


def _inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, generator=gen).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden, generator=gen) * 3 / args.hidden**0.5).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    return hidden, weight, targets


def _step(provider: str, hidden, weight, targets, temperature: float) -> torch.Tensor:
    """One forward + backward of sum(logprobs); returns the detached log-probs."""
    hidden.grad = weight.grad = None
    if provider == "cpp":
        from tao_engine import ops

        logprobs = ops.linear_logprobs(hidden, weight, targets, temperature, backend="cpp")
    else:
        logits = F.linear(hidden, weight)  # [N, V]
        if temperature != 1.0:  # the strongest naive version: no division pass at T = 1
            logits = logits / temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    logprobs.sum().backward()
    return logprobs.detach()


def _resident_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _memory_probe(args: argparse.Namespace) -> None:
    """Child process: print the peak resident-set growth (bytes) of one forward + backward of `args.probe`."""
    hidden, weight, targets = _inputs(args)
    if args.probe == "cpp":
        from tao_engine.ops.extension import load_extension

        load_extension()  # loading the library is not part of the op's memory
    before = _resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    _step(args.probe, hidden, weight, targets, args.temperature)
    print((_resident_kib("VmHWM") - before) * 1024)


def _peak_memory(args: argparse.Namespace, provider: str) -> int:
    cmd = [sys.executable, __file__, "--probe", provider, "--rows", str(args.rows), "--vocab", str(args.vocab),
           "--hidden", str(args.hidden), "--temperature", str(args.temperature)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"bench_linear_logprobs: memory probe for {provider!r} failed:\n{done.stderr}")
    return int(done.stdout.strip().splitlines()[-1])


def _gemm_gflops(args: argparse.Namespace) -> float:
    """This machine's fp32 GEMM speed on one vocabulary block of hidden @ weight.T ([N, H] @ [H, 4096]): an output
    small enough to be reused by the allocator, so the figure is arithmetic, not page faults."""
    a = torch.randn(args.rows, args.hidden)
    b = torch.randn(4096, args.hidden)
    seconds = time_call(lambda: a @ b.T, reps=max(args.reps, 9))
    return 2 * args.rows * args.hidden * 4096 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--probe", choices=PROVIDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        return _memory_probe(args)

    from tao_engine.ops.registry import all_ops

    ok, why = all_ops()["linear_logprobs"].available("cpp")
    if not ok:
        raise SystemExit(f"bench_linear_logprobs: the cpp backend is unavailable: {why}")

    hidden, weight, targets = _inputs(args)
    gflops = _gemm_gflops(args)
    gemm_flop = 2 * args.rows * args.vocab * args.hidden  # one of hidden @ weight.T, d @ weight, d.T @ hidden
    expected = _step("torch (naive)", hidden, weight, targets, args.temperature)
    rows: list[dict[str, object]] = []
    seconds: dict[str, float] = {}
    peaks: dict[str, int] = {}
    # Providers alternate within each repetition, so that load from other users of a shared machine hits both alike.
    samples: dict[str, list[float]] = {provider: [] for provider in PROVIDERS}
    for rep in range(args.reps + 1):  # the first round warms up
        for provider in PROVIDERS:
            start = time.perf_counter()
            _step(provider, hidden, weight, targets, args.temperature)
            if rep > 0:
                samples[provider].append(time.perf_counter() - start)
    for provider in PROVIDERS:
        gemms = 4 if provider == "cpp" else 3
        seconds[provider] = statistics.median(samples[provider])
        error = (_step(provider, hidden, weight, targets, args.temperature) - expected).abs().max().item()
        peaks[provider] = _peak_memory(args, provider)
        rows.append(
            {
                "provider": provider,
                "fwd+bwd ms": seconds[provider] * 1e3,
                "GEMM GFLOP/s": gemms * gemm_flop / seconds[provider] / 1e9,
                "GEMMs": gemms,
                "peak MiB": peaks[provider] / 2**20,
                "max |diff| vs naive": error,
            }
        )
    ratios = {
        "time cpp/naive": seconds["cpp"] / seconds["torch (naive)"],
        "peak memory cpp/naive": peaks["cpp"] / peaks["torch (naive)"],
    }
    shape = f"N={args.rows}, V={args.vocab}, H={args.hidden}"
    print(f"linear_logprobs fwd+bwd, {shape}, fp32, T={args.temperature}, median of {args.reps} alternating runs;",
          f"one GEMM alone {gflops:.0f} GFLOP/s; peak = resident-set growth of one step in a fresh process")
    print_table(rows)
    print_json_line("linear_logprobs", rows, ratios)
    if ratios["peak memory cpp/naive"] > MAX_MEMORY_RATIO:
        raise SystemExit(
            f"bench_linear_logprobs: cpp peak memory is {ratios['peak memory cpp/naive']:.3f} of naive, above the "
            f"{MAX_MEMORY_RATIO:.3f} goal"
        )
    if ratios["time cpp/naive"] > 1.0:
        print(json.dumps({"warning": f"cpp is slower than naive: {ratios['time cpp/naive']:.2f}x"}), file=sys.stderr)


if __name__ == "__main__":
    main()
