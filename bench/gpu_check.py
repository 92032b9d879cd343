"""The GPU check of tao_engine's compiled and Triton kernels: the one command a GPU session runs.

    python bench/gpu_check.py --out bench/results/

In order, each stage given at most what is left of the time budget (--budget-s, 480 s: the expected H100 host
gives the check 8 minutes, building included), the report rewritten after each one so a cut-short run still leaves
what it finished:
1. builds tao_engine._C with CUDA for the GPU present (pip install -e . with every core), unless it already has it;
2. correctness: every op with a `cuda` or `triton` backend against an fp64 torch reference (fp32 where the op's
   reference defines fp32 arithmetic) at odd shapes, in fp32 and a half dtype: a pass/fail table with max errors;
3. bench/aot_check.py for this GPU's target (registers, spills, shared memory of every kernel as compiled here);
4. the GPU tests (`pytest -m gpu`);
5. end to end: the engine's generation on the GPU with SmolLM2, when the model is available;
6. speed: each backend and the torch reference at realistic (SmolLM2-135M) shapes, CUDA-event timing;
7. every per-op benchmark bench/bench_<op>.py at its GPU shapes, each in a child process, their tables kept verbatim
   (bench/gpu_check_benches.py);
writes `<device>.md` into --out and ends with one JSON line. Exit code 1 when a stage fails (a correctness case, the
build, a spill, a GPU test or a benchmark's own check).
Without a CUDA device it prints "no CUDA device: nothing to check" and exits 0; --dry-run walks the same stages on
the CPU without running anything that needs the GPU (the case list, a small ahead-of-time compile, the report).
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import markdown_table, print_json_line, print_table  # noqa: E402

GPU_BACKENDS = ("cuda", "triton")


def gpu_backends(op_name: str) -> list[str]:
    """The cuda / triton backends of an op that can run here (probe ok)."""
    import tao_engine.ops  # noqa: F401  (defines every op)
    from tao_engine.ops.registry import all_ops

    op = all_ops()[op_name]
    return [name for name in GPU_BACKENDS if name in op.backends and op.available(name)[0]]


def backend_status() -> list[dict[str, object]]:
    """Every op with a cuda or triton backend, and whether each probe passes (why not, when it does not)."""
    import tao_engine.ops  # noqa: F401  (defines every op)
    from tao_engine.ops.registry import all_ops

    rows = []
    for name, op in sorted(all_ops().items()):
        for backend in GPU_BACKENDS:
            if backend in op.backends:
                ok, why = op.available(backend)
                rows.append({"op": name, "backend": backend, "available": ok, "why": "" if ok else why})
    return rows


def run_checks() -> list[dict[str, object]]:
    from gpu_check_cases import CASES

    rows: list[dict[str, object]] = []
    covered = {case.op for case in CASES}
    for case in CASES:
        for backend in gpu_backends(case.op):
            for dtype in case.dtypes:
                torch.manual_seed(0)
                row: dict[str, object] = {"op": case.op, "backend": backend, "dtype": str(dtype).removeprefix("torch.")}
                try:
                    error, tolerance, note = case.fn(backend, dtype)
                    torch.cuda.synchronize()
                    row.update(max_error=error, tolerance=tolerance, result="pass" if error <= tolerance else "FAIL",
                               note=note)
                except Exception as exc:
                    traceback.print_exc()
                    row.update(max_error=None, tolerance=None, result="FAIL", note=f"{type(exc).__name__}: {exc}"[:160])
                rows.append(row)
    for status in backend_status():
        if status["op"] not in covered and status["available"]:
            rows.append({"op": status["op"], "backend": status["backend"], "dtype": "-", "max_error": None,
                         "tolerance": None, "result": "no case", "note": "add a case to bench/gpu_check_cases.py"})
    return rows


def write_report(out_dir: Path, device: str, sections: list[tuple[str, list[dict[str, object]]]],
                 appendix: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower() or "gpu"
    path = out_dir / f"{slug}.md"
    text = [f"# GPU check on {device}\n", f"torch {torch.__version__}, CUDA {torch.version.cuda}\n"]
    for title, rows in sections:
        text += [f"\n## {title}\n\n", markdown_table(rows)]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("".join(text) + appendix)
    tmp.replace(path)  # a reader (or a kill) never sees half a report
    return path


def dry_run_cases() -> list[dict[str, object]]:
    """The correctness cases as they would run, without running them (no GPU)."""
    from gpu_check_cases import CASES

    import tao_engine.ops  # noqa: F401  (defines every op)
    from tao_engine.ops.registry import all_ops

    ops = all_ops()
    return [{"op": case.op, "backend": backend, "dtype": str(dtype).removeprefix("torch."), "max_error": None,
             "tolerance": None, "result": "dry run", "note": case.fn.__name__}
            for case in CASES for backend in GPU_BACKENDS if backend in ops[case.op].backends for dtype in case.dtypes]


class Report:
    """The sections so far and the child runs; written out after every stage."""

    def __init__(self, out_dir: Path, device: str) -> None:
        self.out_dir, self.device = out_dir, device
        self.sections: list[tuple[str, list[dict[str, object]]]] = []
        self.children: list[object] = []
        self.path: Path | None = None

    def add(self, title: str, rows: list[dict[str, object]]) -> None:
        self.sections.append((title, rows))
        print(f"\n{title}")
        print_table(rows)
        self.write()

    def add_child(self, run: object) -> None:
        self.children.append(run)
        self.write()

    def write(self) -> None:
        import gpu_check_benches

        sections = list(self.sections)
        appendix = ""
        if self.children:
            sections.append(("Child runs: build, ahead-of-time compile, GPU tests, op benchmarks",
                             gpu_check_benches.summary_rows(self.children)))
            appendix = "\n## Output of each run\n" + gpu_check_benches.markdown(self.children)
        self.path = write_report(self.out_dir, self.device, sections, appendix)


def run_stages(args: argparse.Namespace, report: Report, budget: object) -> tuple[list[dict[str, object]], list,
                                                                              dict[str, object]]:
    """Every stage in order; returns (correctness rows, timing rows, generation)."""
    import gpu_check_benches
    import gpu_check_stages as stages

    dry = args.dry_run
    capability = (9, 0) if dry else torch.cuda.get_device_capability(0)
    arch = f"{capability[0]}.{capability[1]}"
    if dry:
        report.add_child(stages.skipped("build _C with CUDA", "dry run: " + " ".join(stages.build_command())
                                        + f" with MAX_JOBS, TAO_BUILD_CUDA=1, TORCH_CUDA_ARCH_LIST={arch}"))
    elif not args.skip_build:
        report.add_child(stages.build_extension(arch, budget.cap(stages.BUILD_CAP_S)))

    report.add("Backends", backend_status())  # after the build: the probes load _C
    checks = dry_run_cases() if dry else run_checks()
    report.add("Correctness", checks)

    target = stages.aot_target(capability)
    if target is None:
        report.add_child(stages.skipped("aot_check", f"no ahead-of-time target for sm_{capability[0]}{capability[1]}"))
    elif budget.cap(stages.AOT_CAP_S) < 10:
        report.add_child(stages.skipped(f"aot_check {target}", "out of time"))
    else:
        # The dry run compiles two kernels (RMSNorm at SmolLM2's width) to walk the path; a GPU run all of them.
        report.add_child(stages.run_aot_check(target, args.out, budget.cap(stages.AOT_CAP_S), quick=dry,
                                              cases="rms_norm 4096" if dry else None))
    if dry or args.skip_tests:
        report.add_child(stages.skipped("pytest -m gpu", "dry run" if dry else "--skip-tests"))
    else:
        report.add_child(gpu_check_benches.run_gpu_tests(timeout_s=budget.cap(180.0)))

    generation: dict[str, object] = {}
    if not (dry or args.skip_generate) and budget.left() > 60:
        from gpu_check_timing import time_generation

        generation = time_generation()
        report.add("End-to-end generation (SmolLM2-135M, 8 prompts x 8 samples, 64 tokens)",
                   [{"run": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in generation.items()])
    timings: list[dict[str, object]] = []
    if not (dry or args.skip_timing) and budget.left() > 60:
        from gpu_check_timing import time_ops

        timings = time_ops(gpu_backends)
        report.add("Timings (median ms per call)", timings)
    for name in () if args.skip_benches else gpu_check_benches.OP_BENCHES:
        if dry:
            report.add_child(stages.skipped(name, "dry run"))
        elif budget.cap(90.0) < 10:
            report.add_child(stages.skipped(name, "out of time"))
        else:
            report.add_child(gpu_check_benches.run_op_benches((name,), timeout_s=budget.cap(90.0))[0])
    return checks, timings, generation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--budget-s", type=float, default=480.0, help="time for the whole check, build included")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU: the stages without the GPU work")
    parser.add_argument("--skip-build", action="store_true", help="use the installed _C as it is")
    parser.add_argument("--skip-timing", action="store_true", help="no per-op timings")
    parser.add_argument("--skip-generate", action="store_true", help="no end-to-end generation")
    parser.add_argument("--skip-tests", action="store_true", help="no `pytest -m gpu`")
    parser.add_argument("--skip-benches", action="store_true", help="no bench/bench_<op>.py runs")
    args = parser.parse_args(argv)

    import gpu_check_stages as stages

    budget = stages.Budget(args.budget_s)
    if args.dry_run:
        device = "dry run on CPU"
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    else:
        device = torch.cuda.get_device_name(0)
    print(f"device: {device} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    report = Report(args.out, device)
    checks, timings, generation = run_stages(args, report, budget)
    print(f"\nwrote {report.path}")

    failed = [row for row in checks if row["result"] == "FAIL"]
    failed += [{"run": child.name} for child in report.children if child.result in ("FAIL", "TIMEOUT")]
    ratios = {f"{row['op']} {row['shape']} {row['backend']}": row["x_vs_torch"] for row in timings
              if row["backend"] != "torch" and row["x_vs_torch"] is not None}
    import gpu_check_benches

    ratios.update(gpu_check_benches.ratios(report.children))
    print_json_line("gpu_check", [{"device": device, "checks": len(checks), "failed": len(failed),
                                   "report": str(report.path), "generation": generation,
                                   "seconds": round(args.budget_s - budget.left(), 1)}], ratios)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
