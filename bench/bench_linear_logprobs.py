"""linear_logprobs, forward + backward: naive torch (F.linear + log_softmax + gather, autograd) and its peers vs ours.

Shape of a small-model RL step: hidden [N, H] and LM head [V, H], fp32 (N=4096, V=49152, H=576, SmolLM2's head), in
two modes: "trainable weight" (hidden and weight require grad) and "frozen weight (LoRA)" (hidden only: the project's
default tuning mode, where SmolLM2's head is the tied, frozen embedding and ours takes linear_logprobs_frozen_weight).
Providers: naive torch; the same under torch.compile (--no-compile skips it); torch's own chunked
F.linear_cross_entropy (its LinearCrossEntropyOptions path); ours (`cpp` on CPU, `cuda` on GPU); on a GPU also Liger's
fused linear cross-entropy when liger_kernel is installed. Reports the median time of forward + backward, the GEMM
FLOP/s it implies counting the naive GEMMs only (3 trainable, 2 frozen: the work any provider must do) beside the speed
of one such GEMM alone (the ceiling), and the peak memory of one forward + backward.

Peak memory is measured, not estimated. On CPU each (mode, provider) runs once in a fresh child process that builds
the inputs, resets the kernel's resident-set high-water mark (/proc/self/clear_refs, Linux), runs forward + backward
and reads VmHWM; the figure is that peak minus the resident set before the call (so it counts the outputs and
gradients, e.g. ~0.1 GiB of grad_weight). On CUDA it is torch.cuda.max_memory_allocated minus the allocation before.
The bench fails if our peak is above 1/8 of the naive one in either mode (issue 5's goal) and warns when we are slower.
Ends with one JSON line. Run: .venv/bin/python bench/bench_linear_logprobs.py [--rows 4096] [--reps 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402

MODES = {"trainable weight": True, "frozen weight (LoRA)": False}  # mode -> weight requires grad
NAIVE, COMPILED, TORCH_CHUNKED, LIGER = "torch (naive)", "torch.compile (naive)", "torch linear_cross_entropy", "liger"
MAX_MEMORY_RATIO = 1 / 8


def _naive(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = F.linear(hidden, weight)  # [N, V]
    if temperature != 1.0:  # the strongest naive version: no division pass at T = 1
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def _torch_chunked(hidden, weight, targets, temperature: float) -> torch.Tensor:
    scaled = hidden if temperature == 1.0 else hidden / temperature  # logits / T = (hidden / T) @ W.T
    options = torch.nn.LinearCrossEntropyOptions()
    return -F.linear_cross_entropy(scaled, weight, targets, reduction="none", options=options)


def _liger(hidden, weight, targets, temperature: float) -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy  # lazy: an optional GPU peer

    scaled = hidden if temperature == 1.0 else hidden / temperature
    # Liger returns the reduced loss only: sum(logprobs) = -sum cross-entropy, broadcast so every provider returns [N].
    total = -liger_fused_linear_cross_entropy(scaled, weight, targets, reduction="sum")
    return total.expand(hidden.shape[0]) / hidden.shape[0]


def _ours(backend: str) -> Callable[..., torch.Tensor]:
    def run(hidden, weight, targets, temperature: float) -> torch.Tensor:
        from tao_engine import ops

        return ops.linear_logprobs(hidden, weight, targets, temperature, backend=backend)

    return run


def _providers(args: argparse.Namespace) -> dict[str, Callable[..., torch.Tensor]]:
    providers: dict[str, Callable[..., torch.Tensor]] = {NAIVE: _naive}
    if args.compile:
        providers[COMPILED] = torch.compile(_naive, dynamic=False)
    if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):
        providers[TORCH_CHUNKED] = _torch_chunked
    providers[args.backend] = _ours(args.backend)
    if args.device == "cuda":
        try:
            import liger_kernel  # noqa: F401
        except ImportError:
            print("liger_kernel is not installed: the Liger peer is skipped", file=sys.stderr)
        else:
            providers[LIGER] = _liger
    return providers


def _inputs(args: argparse.Namespace, weight_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, generator=gen)
    weight = torch.randn(args.vocab, args.hidden, generator=gen) * 3 / args.hidden**0.5
    targets = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    device = torch.device(args.device)
    return hidden.to(device).requires_grad_(), weight.to(device).requires_grad_(weight_grad), targets.to(device)


def _step(fn, hidden, weight, targets, temperature: float) -> torch.Tensor:
    """One forward + backward of sum(logprobs); returns the detached log-probs [N]."""
    hidden.grad = weight.grad = None
    logprobs = fn(hidden, weight, targets, temperature)
    logprobs.sum().backward()
    return logprobs.detach()


def _resident_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _memory_probe(args: argparse.Namespace) -> None:
    """Child process: print the peak resident-set growth (bytes) of one forward + backward of `args.probe`."""
    fn = _providers(args)[args.probe]
    hidden, weight, targets = _inputs(args, MODES[args.mode])
    if args.probe == args.backend:
        from tao_engine.ops.extension import load_extension

        load_extension()  # loading the library is not part of the op's memory
    if args.probe == COMPILED:
        _step(fn, hidden, weight, targets, args.temperature)  # compiling is not part of the op's memory either
        hidden.grad = weight.grad = None
    before = _resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
    _step(fn, hidden, weight, targets, args.temperature)
    print((_resident_kib("VmHWM") - before) * 1024)


def _peak_memory(args: argparse.Namespace, mode: str, provider: str, fn) -> int:
    if args.device == "cuda":
        hidden, weight, targets = _inputs(args, MODES[mode])
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(fn, hidden, weight, targets, args.temperature)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    cmd = [sys.executable, __file__, "--probe", provider, "--mode", mode, "--rows", str(args.rows), "--vocab",
           str(args.vocab), "--hidden", str(args.hidden), "--temperature", str(args.temperature)]  # fmt: skip
    cmd += [] if args.compile else ["--no-compile"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"bench_linear_logprobs: memory probe for {provider!r} ({mode}) failed:\n{done.stderr}")
    return int(done.stdout.strip().splitlines()[-1])


def _gemm_gflops(args: argparse.Namespace) -> float:
    """This machine's fp32 GEMM speed on one vocabulary block of hidden @ weight.T ([N, H] @ [H, 4096]): an output
    small enough to be reused by the allocator, so the figure is arithmetic, not page faults."""
    a = torch.randn(args.rows, args.hidden, device=args.device)
    b = torch.randn(4096, args.hidden, device=args.device)
    seconds = time_call(lambda: a @ b.T, reps=max(args.reps, 9))
    return 2 * args.rows * args.hidden * 4096 / seconds / 1e9


def _bench_mode(args, mode: str, providers: dict, rows: list, seconds: dict, peaks: dict) -> None:
    hidden, weight, targets = _inputs(args, MODES[mode])
    naive_gemms = 3 if MODES[mode] else 2  # forward; grad_hidden; grad_weight when trainable
    gemm_flop = 2 * args.rows * args.vocab * args.hidden  # one of hidden @ weight.T, d @ weight, d.T @ hidden
    expected = _step(_naive, hidden, weight, targets, args.temperature)
    # Providers alternate within each repetition, so that load from other users of a shared machine hits all alike.
    samples: dict[str, list[float]] = {provider: [] for provider in providers}
    for rep in range(args.reps + 1):  # the first round warms up (and compiles)
        for provider, fn in providers.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _step(fn, hidden, weight, targets, args.temperature)
            if args.device == "cuda":
                torch.cuda.synchronize()
            if rep > 0:
                samples[provider].append(time.perf_counter() - start)
    for provider, fn in providers.items():
        key = (mode, provider)
        seconds[key] = statistics.median(samples[provider])
        got = _step(fn, hidden, weight, targets, args.temperature)
        # Liger returns only the sum: compare sums there, per-row log-probs elsewhere.
        error = (got.sum() - expected.sum()).abs().item() if provider == LIGER else (got - expected).abs().max().item()
        peaks[key] = _peak_memory(args, mode, provider, fn)
        rows.append({
            "mode": mode,
            "provider": provider,
            "fwd+bwd ms": seconds[key] * 1e3,
            "naive-GEMM GFLOP/s": naive_gemms * gemm_flop / seconds[key] / 1e9,
            "peak MiB": peaks[key] / 2**20,
            "max |diff| vs naive": error,
        })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile provider")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.backend = "cpp" if args.device == "cpu" else "cuda"
    if args.probe is not None:
        return _memory_probe(args)

    from tao_engine.ops.registry import all_ops

    ok, why = all_ops()["linear_logprobs"].available(args.backend)
    if not ok:
        raise SystemExit(f"bench_linear_logprobs: the {args.backend} backend is unavailable: {why}")
    providers = _providers(args)
    gflops = _gemm_gflops(args)
    rows: list[dict[str, object]] = []
    seconds: dict[tuple[str, str], float] = {}
    peaks: dict[tuple[str, str], int] = {}
    for mode in args.modes:
        _bench_mode(args, mode, providers, rows, seconds, peaks)
    ratios: dict[str, float] = {}
    for mode in args.modes:
        for provider in providers:
            if provider != args.backend:
                ratios[f"time {args.backend}/{provider} [{mode}]"] = (
                    seconds[mode, args.backend] / seconds[mode, provider]
                )
        ratios[f"peak memory {args.backend}/naive [{mode}]"] = peaks[mode, args.backend] / peaks[mode, NAIVE]
    shape = f"N={args.rows}, V={args.vocab}, H={args.hidden}"
    print(f"linear_logprobs fwd+bwd on {args.device}, {shape}, fp32, T={args.temperature}, median of {args.reps}",
          f"alternating runs; one GEMM alone {gflops:.0f} GFLOP/s; peak = growth of one step",
          "(resident set in a fresh process)" if args.device == "cpu" else "(CUDA allocator)")
    print_table(rows)
    print_json_line("linear_logprobs", rows, ratios)
    for mode in args.modes:
        memory = ratios[f"peak memory {args.backend}/naive [{mode}]"]
        if memory > MAX_MEMORY_RATIO:
            raise SystemExit(
                f"bench_linear_logprobs: {args.backend} peak memory is {memory:.3f} of naive ({mode}), above the "
                f"{MAX_MEMORY_RATIO:.3f} goal"
            )
        slower = ratios[f"time {args.backend}/{NAIVE} [{mode}]"]
        if slower > 1.0:
            print(json.dumps({"warning": f"{args.backend} is slower than naive ({mode}): {slower:.2f}x"}),
                  file=sys.stderr)


if __name__ == "__main__":
    main()
