"""Every GPU kernel of tao_engine compiled ahead of time, with its registers, spills and shared memory; no GPU needed.

    python bench/aot_check.py                     # sm90 (required), sm100 and gfx942 (reported), all cases
    python bench/aot_check.py --targets sm90 --quick

Triton: the launchers of kernels/ run for the SmolLM2-135M, Llama-3-8B and Qwen2.5-7B shapes in bf16 and fp32
(bench/aot_cases.py) under a stand-in driver that launches nothing (bench/aot_standin.py); each distinct launch is
compiled for each target (bench/aot_compile.py). CUDA: every kernel of csrc/cuda/*.cu compiled by nvcc with the
build's flags (bench/aot_cuda_sources.py), for the NVIDIA targets, when nvcc is installed.

Writes bench/results/aot-<target>.md per target (as each target finishes) and ends with one JSON line. Exit code 1
when a required target has a kernel that spills, asks for more shared memory than a block may use, or fails to
compile. TRITON_INTERPRET is removed from the environment before any kernel module is imported.
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # before anything imports the kernel modules (see aot_standin.py)

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import triton  # noqa: E402
from aot_cases import all_cases  # noqa: E402
from aot_compile import TARGETS, Resources, Target, compile_launch  # noqa: E402
from aot_cuda_sources import cuda_rows, find_nvcc  # noqa: E402
from aot_standin import Launch, capture_launches  # noqa: E402
from common import markdown_table, print_json_line, print_table  # noqa: E402

SHOWN_CASES = 3  # case labels listed per row; the rest are counted


def capture(target: Target, quick: bool, only: str | None) -> dict[str, tuple[Launch, list[str]]]:
    """Every distinct launch the cases make for `target` -> (launch, labels of the cases that made it). `only`: the
    cases whose label contains one of these comma-separated words."""
    from tao_engine.kernels.paged_attention import gpu_programs

    words = [w for w in (only or "").split(",") if w]
    launches: dict[str, tuple[Launch, list[str]]] = {}
    for case in all_cases(gpu_programs(target.compute_units), quick):
        if words and not any(word in case.label for word in words):
            continue
        with capture_launches(target.triton()) as captured:
            case.run()
        if not captured:
            raise RuntimeError(f"case {case.label!r} launched no Triton kernel")
        for launch in captured:
            launches.setdefault(launch.key(), (launch, []))[1].append(case.label)
    return launches


def _cases_cell(labels: list[str]) -> str:
    shown = "; ".join(labels[:SHOWN_CASES])
    return shown + (f"; +{len(labels) - SHOWN_CASES} more" if len(labels) > SHOWN_CASES else "")


def triton_rows(target: Target, quick: bool, jobs: int, only: str | None = None) -> list[dict[str, object]]:
    launches = list(capture(target, quick, only).values())
    # Spawned workers import the kernel modules afresh (TRITON_INTERPRET is already out of the environment).
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(compile_launch, launch, target) for launch, _ in launches]
        rows = []
        for (launch, labels), future in zip(launches, futures, strict=True):
            row: dict[str, object] = {"kernel": f"{launch.module.rsplit('.', 1)[-1]}.{launch.kernel}",
                                      "config": launch.describe(), "cases": _cases_cell(labels)}
            try:
                res = Resources(**future.result())
                problems = res.problems(target)
                row.update(REG=res.regs, STACK=res.stack, SHARED=res.shared, LOCAL=res.local, spills=res.spills,
                           result="FAIL: " + ", ".join(problems) if problems else "ok", note=res.note)
            except Exception as exc:  # a compile error is a failing row, not a crash: the other rows still count
                row.update(REG=None, STACK=None, SHARED=None, LOCAL=None, spills=None, result="FAIL: compile",
                           note=f"{type(exc).__name__}: {exc}"[:300])
            rows.append(row)
    return sorted(rows, key=lambda r: (str(r["kernel"]), str(r["config"])))


def tool_versions() -> dict[str, str]:
    import torch
    from triton import knobs

    versions = {"torch": torch.__version__, "triton": triton.__version__}
    ptxas = subprocess.run([knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
    versions["ptxas"] = ptxas.strip().splitlines()[-1] if ptxas.strip() else "?"
    nvcc = find_nvcc()
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        versions["nvcc"] = out[-1] if out else "?"
    return versions


def write_report(out_dir: Path, target: Target, triton_table: list[dict[str, object]],
                 cuda_table: list[dict[str, object]], quick: bool, seconds: float) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"aot-{target.name}{'-quick' if quick else ''}.md"
    from common import git_commit

    versions = ", ".join(f"{k} {v}" for k, v in tool_versions().items()) + f", commit {git_commit()}"
    kind = "required: a failure fails the check" if target.required else "reported"
    text = [
        f"# Ahead-of-time compile for {target.backend} {target.arch} ({target.gpu}; {kind})\n\n",
        "Written by `python bench/aot_check.py`. Compiled on a machine without a GPU: these are the compiler's "
        "resource counts, not measurements on the device.\n\n",
        f"{versions}. {len(triton_table)} distinct Triton launches, {len(cuda_table)} CUDA kernels, "
        f"{seconds:.0f} s. Shared memory limit per block: {target.shared_limit} bytes.\n\n",
        "Columns: REG registers per thread (AMD: VGPRs + AGPRs); STACK stack frame bytes (AMD: scratch); SHARED "
        "bytes per block (Triton: dynamic + cuobjdump's static; AMD: LDS); LOCAL local memory bytes; spills: bytes "
        "of spill stores + loads from ptxas -v (AMD: spilled VGPRs + SGPRs).\n\n",
        "## Triton kernels (kernels/), at the configurations the launchers choose\n\n",
        markdown_table(triton_table),
    ]
    if target.backend == "cuda":
        text += [f"\n## CUDA kernels (csrc/cuda/), nvcc -cubin -arch=sm_{target.arch} -Xptxas -v\n\n",
                 markdown_table(cuda_table) if cuda_table else "(nvcc not installed: not compiled)\n"]
    path.write_text("".join(text))
    return path


def summary(target: Target, rows: list[dict[str, object]]) -> dict[str, object]:
    regs = [r["REG"] for r in rows if isinstance(r["REG"], int)]
    worst = max(rows, key=lambda r: r["REG"] if isinstance(r["REG"], int) else -1) if rows else None
    return {"target": target.name, "required": target.required, "rows": len(rows),
            "failed": sum(1 for r in rows if str(r["result"]).startswith("FAIL")),
            "spilling": sum(1 for r in rows if r["spills"]), "max_reg": max(regs) if regs else None,
            "max_reg_kernel": f"{worst['kernel']} {worst.get('config', '')}".strip() if worst else None,
            "max_shared": max((r["SHARED"] for r in rows if isinstance(r["SHARED"], int)), default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--quick", action="store_true", help="SmolLM2 in bf16 and the main RL settings only")
    parser.add_argument("--cuda-sources", default=None,
                        help="comma-separated csrc/cuda/*.cu names (default: all); 'none' skips them")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--jobs", type=int, default=max(1, min(16, os.cpu_count() or 1)))
    parser.add_argument("--cases", default=None, help="only the cases whose label has one of these comma-separated "
                        "words (a partial table: for iterating on a launcher)")
    args = parser.parse_args(argv)

    targets = [TARGETS[name] for name in args.targets.split(",")]
    from aot_cuda_sources import CUDA_DIR

    sources = None if args.cuda_sources is None else [
        CUDA_DIR / name for name in args.cuda_sources.split(",") if name and name != "none"]
    summaries, failed = [], 0
    for target in targets:
        start = time.perf_counter()
        table = triton_rows(target, args.quick, args.jobs, args.cases)
        cuda_table = cuda_rows(int(target.arch), sources) if target.backend == "cuda" and sources != [] else []
        report = write_report(args.out, target, table, cuda_table, args.quick, time.perf_counter() - start)
        print(f"\n{target.name} ({target.gpu}): Triton kernels")
        print_table([{k: v for k, v in row.items() if k != "note"} for row in table])
        if cuda_table:
            print(f"\n{target.name}: CUDA kernels")
            print_table([{k: v for k, v in row.items() if k != "note"} for row in cuda_table])
        print(f"wrote {report}", flush=True)
        entry = summary(target, table + cuda_table)
        summaries.append(entry)
        if target.required:
            failed += int(entry["failed"])
    versions = tool_versions()
    print_json_line("aot_check", [{**entry, "versions": versions} for entry in summaries], {})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
