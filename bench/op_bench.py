"""What the per-op benchmarks (bench/bench_<op>.py) share: the providers of an op, the check of every provider's output
against the torch reference before it is timed, timing on CPU or CUDA, and the command-line flags.

Providers of an op, in this order, each only where it can run:
- `torch`: the op's reference (the specification), eager;
- `torch.compile`: the same reference under torch.compile; a compile failure skips it with the error as its note;
- `triton`: CUDA tensors only (a bench never runs Triton's CPU interpreter: its times mean nothing);
- `cpp`: CPU tensors; `cuda`: CUDA tensors; each when the extension is built with it.
A provider that cannot run gets a row with no time and a note saying why, so every table names every provider.

A provider's output must match the reference's within a tolerance before it is timed: a mismatch is a FAIL row (no
time) and makes the bench exit with code 1 after printing its table and JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from common import print_json_line, print_table

# Relative tolerance (|actual - expected| / max |expected|) of a provider against the reference run in the same
# dtype: the reference rounds too, so half precision gets a few of its ulps.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 1e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
COMPILED_BACKENDS = ("triton", "cpp", "cuda")


class ProviderMismatch(AssertionError):
    """A provider's output differs from the reference's by more than the tolerance."""


@dataclass(frozen=True)
class Provider:
    name: str
    fn: Callable[..., Any] | None  # the op with the reference's signature, or None when it cannot run here
    skip: str = ""  # why it cannot run here


def bench_parser(doc: str, reps: int) -> argparse.ArgumentParser:
    """The command line of an op bench: its docstring as the help, and the flags every op bench takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 reps: a smoke test, not a benchmark")
    parser.add_argument("--providers", default="", help="comma-separated subset (default: every provider)")
    return parser


def parse_dtypes(flag: str, value: str) -> list[torch.dtype]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in DTYPES]
    if unknown or not names:
        raise SystemExit(f"{flag}: unknown or no dtypes {unknown}; choose from {sorted(DTYPES)}")
    return [DTYPES[name] for name in names]


def add_dtypes_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtypes", default="", help="comma-separated (default: float32 on CPU, bfloat16 on CUDA)")


def chosen_dtypes(args: argparse.Namespace) -> list[torch.dtype]:
    """--dtypes, or the device's default: float32 on the CPU, bfloat16 on CUDA."""
    return parse_dtypes("--dtypes", args.dtypes or ("bfloat16" if args.device == "cuda" else "float32"))


def add_names_arg(parser: argparse.ArgumentParser, flag: str, known: Iterable[str]) -> None:
    parser.add_argument(flag, default="", help=f"comma-separated, from {sorted(known)} (default: per device)")


def chosen_names(args: argparse.Namespace, flag: str, known: Iterable[str]) -> list[str]:
    """The named configurations of `flag` (--shapes, --heads); by default `tiny` with --quick, else smollm2 (and
    llama8b on CUDA)."""
    default = "tiny" if args.quick else ("smollm2,llama8b" if args.device == "cuda" else "smollm2")
    names = [s.strip() for s in (getattr(args, flag.removeprefix("--")) or default).split(",") if s.strip()]
    if not names or any(name not in known for name in names):
        raise SystemExit(f"{flag}: choose from {sorted(known)}, got {names}")
    return names


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def op_providers(op_name: str, device: str, wanted: str = "") -> list[Provider]:
    """torch, torch.compile and the op's registered backends, each runnable here or with the reason it is not."""
    import tao_engine.ops  # noqa: F401  (defines every op)
    from tao_engine.ops.registry import all_ops

    op = all_ops()[op_name]
    providers = [Provider("torch", op.reference), Provider("torch.compile", _compiled(op.reference))]
    for name in COMPILED_BACKENDS:
        if name not in op.backends:
            continue  # the op has no such backend: no row
        if name == "triton" and device != "cuda":
            providers.append(Provider(name, None, "CUDA tensors only (a bench never uses the Triton interpreter)"))
        elif name == "cuda" and device != "cuda":
            providers.append(Provider(name, None, "CUDA tensors only"))
        elif name == "cpp" and device != "cpu":
            providers.append(Provider(name, None, "CPU tensors only"))
        else:
            ok, why = op.available(name)
            providers.append(Provider(name, functools.partial(op, backend=name) if ok else None, "" if ok else why))
    return select(providers, wanted)


def select(providers: list[Provider], wanted: str) -> list[Provider]:
    """The providers named in `wanted` (comma-separated; empty: all); the reference always stays."""
    names = {name.strip() for name in wanted.split(",") if name.strip()}
    if not names:
        return providers
    known = {p.name for p in providers}
    if names - known:
        raise SystemExit(f"--providers: unknown {sorted(names - known)}; this bench has {sorted(known)}")
    return [p if p.name in names or p.name == "torch" else Provider(p.name, None, "not asked for (--providers)")
            for p in providers]


def _compiled(reference: Callable[..., Any]) -> Callable[..., Any]:
    compiled: list[Callable[..., Any]] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        if not compiled:  # compiled on first use, so that a bench that never calls it never imports inductor
            compiled.append(torch.compile(reference))
        return compiled[0](*args, **kwargs)

    return run


def _leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor in an op's output: a tensor, a tuple/list of them, or a dataclass of them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for field in dataclasses.fields(value) for t in _leaves(getattr(value, field.name))]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _leaves(item)]
    return []


def max_error(actual: Any, expected: Any) -> float:
    """Largest |actual - expected| / max |expected| over every tensor of two outputs of the same structure.
    NaN where the reference has none (or the reverse), a shape mismatch and a differing bool count as infinite."""
    got, want = _leaves(actual), _leaves(expected)
    if len(got) != len(want):
        return math.inf
    worst = 0.0
    for a, e in zip(got, want, strict=True):
        a, e = a.detach().cpu(), e.detach().cpu()
        if a.shape != e.shape:
            return math.inf
        if e.numel() == 0:
            continue
        if e.dtype == torch.bool or not e.dtype.is_floating_point:
            worst = max(worst, math.inf if bool((a.to(e.dtype) != e).any()) else 0.0)
            continue
        a, e = a.double(), e.double()
        if bool((torch.isnan(a) != torch.isnan(e)).any()):
            return math.inf
        finite = ~torch.isnan(e)
        if bool(finite.any()):
            scale = float(e[finite].abs().max()) or 1.0  # relative to the output's scale (gradients may be ~1e-6)
            worst = max(worst, float((a[finite] - e[finite]).abs().max()) / scale)
    return worst


def check_output(provider: str, actual: Any, expected: Any, tolerance: float) -> float:
    """The provider's max error against the reference; raises ProviderMismatch when it is over the tolerance."""
    error = max_error(actual, expected)
    if not error <= tolerance:
        raise ProviderMismatch(f"{provider}: max error {error:.3g} vs the torch reference is over {tolerance:.3g}")
    return error


def time_ms(fn: Callable[[], object], device: str, reps: int, warmup: int = 2) -> float:
    """Median milliseconds per call: CUDA events around each call on a GPU, wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int, reps: int) -> float:
    """Bytes per second of one large tensor copy (bytes read + bytes written / time): the memory-bound ceiling that
    achieved bandwidths are measured against."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, max(reps, 3))
    return 2 * src.numel() * 4 / (ms / 1e3)


def run_providers(
    providers: list[Provider],
    make: Callable[[Callable[..., Any]], Callable[[], Any]],
    expected: Any,
    tolerance: float,
    device: str,
    reps: int,
    label: dict[str, object],
    nbytes: int | None = None,
) -> tuple[list[dict[str, object]], bool]:
    """One row per provider: its output checked against `expected` (from the reference), then its time.

    make(fn) -> a zero-argument call of the op implemented by `fn` on the bench's inputs, returning the op's output
    (ops that write in place return what they wrote). Returns (rows, all checks passed)."""
    rows: list[dict[str, object]] = []
    passed = True
    for provider in providers:
        row: dict[str, object] = {**label, "provider": provider.name, "ms": None}
        if nbytes is not None:
            row["GB/s"] = None
        row.update({"max err": None, "check": "skipped", "note": provider.skip})
        if provider.fn is not None:
            call = make(provider.fn)
            try:
                row["max err"] = check_output(provider.name, call(), expected, tolerance)
            except ProviderMismatch as exc:
                row.update(check="FAIL", note=str(exc))
                passed = False
            except Exception as exc:  # reported in its row; the other providers still run
                from tao_engine.ops.registry import BackendUnavailableError

                why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                if provider.name == "torch.compile":
                    row["note"] = f"torch.compile failed here: {why}"
                elif isinstance(exc, BackendUnavailableError):
                    row["note"] = why  # the backend refuses this shape or dtype: skipped, not wrong
                else:
                    row.update(check="FAIL", note=why)
                    passed = False
            else:
                ms = time_ms(call, device, reps)
                row.update(ms=ms, check="ok")
                if nbytes is not None:
                    row["GB/s"] = nbytes / (ms / 1e3) / 1e9
        rows.append(row)
    return rows, passed


def speedups(rows: list[dict[str, object]], key: str) -> dict[str, float]:
    """time(torch) / time(provider) for every timed provider of one table section: above 1 it beats the reference."""
    times = {row["provider"]: row["ms"] for row in rows if isinstance(row["ms"], float)}
    ref = times.get("torch")
    if not ref:
        return {}
    return {f"{key} speedup torch/{name}": ref / ms for name, ms in times.items() if name != "torch"}


@dataclass
class Report:
    """A bench's table rows over all its sections, the speedups its JSON line reports, and whether every provider's
    output matched the reference."""

    name: str
    rows: list[dict[str, object]] = dataclasses.field(default_factory=list)
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    passed: bool = True

    def add(self, section: list[dict[str, object]], ok: bool, key: str | None = None) -> None:
        """One section's rows (from run_providers); `key` names its speedups over the torch reference."""
        self.rows += section
        if key is not None:
            self.ratios.update(speedups(section, key))
        self.passed &= ok

    def finish(self, title: str | None = None) -> int:
        """Prints the title, the table and the JSON line; returns the exit code (1: a provider's output was wrong)."""
        if title is not None:
            print(title)
        print_table(self.rows)
        print_json_line(self.name, self.rows, self.ratios)
        return 0 if self.passed else 1
