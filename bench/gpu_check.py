"""The GPU check of tao_engine's compiled and Triton kernels: one script a GPU session runs after
`pip install --no-build-isolation -e .` (it builds nothing itself).

    python bench/gpu_check.py --out bench/results/

1. prints the device;
2. correctness: every op with a `cuda` or `triton` backend against an fp64 torch reference (fp32 where the op's
   reference defines fp32 arithmetic) at odd shapes, in fp32 and a half dtype: a pass/fail table with max errors;
3. speed: each of those backends and the torch reference at realistic (SmolLM2-135M) shapes, CUDA-event timing;
4. end to end: the engine's generation on the GPU with SmolLM2, when the model is available;
5. the GPU tests (`pytest -m gpu`) and every per-op benchmark bench/bench_<op>.py at its GPU shapes, each in a child
   process, their tables kept verbatim (bench/gpu_check_benches.py);
writes `<device>.md` into --out and ends with one JSON line. Exit code 1 when a correctness case, a GPU test or a
benchmark's own check fails.
Without a CUDA device it prints "no CUDA device: nothing to check" and exits 0.
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402

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


def _markdown_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in row.values()]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, device: str, sections: list[tuple[str, list[dict[str, object]]]],
                 appendix: str = "") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower() or "gpu"
    path = out_dir / f"{slug}.md"
    text = [f"# GPU check on {device}\n", f"torch {torch.__version__}, CUDA {torch.version.cuda}\n"]
    for title, rows in sections:
        text += [f"\n## {title}\n\n", _markdown_table(rows)]
    path.write_text("".join(text) + appendix)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--skip-timing", action="store_true", help="correctness only")
    parser.add_argument("--skip-generate", action="store_true", help="no end-to-end generation")
    parser.add_argument("--skip-tests", action="store_true", help="no `pytest -m gpu`")
    parser.add_argument("--skip-benches", action="store_true", help="no bench/bench_<op>.py runs")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    device = torch.cuda.get_device_name(0)
    print(f"device: {device} (torch {torch.__version__}, CUDA {torch.version.cuda})")

    status = backend_status()
    print("\nbackends")
    print_table(status)
    checks = run_checks()
    print("\ncorrectness against the torch reference")
    print_table(checks)
    sections = [("Backends", status), ("Correctness", checks)]

    timings: list[dict[str, object]] = []
    if not args.skip_timing:
        from gpu_check_timing import time_ops

        timings = time_ops(gpu_backends)
        print("\ntimings (median ms per call, CUDA events)")
        print_table(timings)
        sections.append(("Timings (median ms per call)", timings))
    generation: dict[str, object] = {}
    if not args.skip_generate:
        from gpu_check_timing import time_generation

        generation = time_generation()
        print(f"\nend-to-end generation: {generation}")
        sections.append(("End-to-end generation (SmolLM2-135M, 8 prompts x 8 samples, 64 tokens)",
                         [{"run": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in generation.items()]))
    import gpu_check_benches

    children = [] if args.skip_tests else [gpu_check_benches.run_gpu_tests()]
    children += [] if args.skip_benches else gpu_check_benches.run_op_benches()
    appendix = ""
    if children:
        sections.append(("GPU tests and op benchmarks", gpu_check_benches.summary_rows(children)))
        print("\nGPU tests and op benchmarks")
        print_table(gpu_check_benches.summary_rows(children))
        appendix = "\n## Output of each run\n" + gpu_check_benches.markdown(children)
    report = write_report(args.out, device, sections, appendix)
    print(f"\nwrote {report}")

    failed = [row for row in checks if row["result"] == "FAIL"]
    failed += [{"run": child.name} for child in children if child.result in ("FAIL", "TIMEOUT")]
    ratios = {f"{row['op']} {row['shape']} {row['backend']}": row["x_vs_torch"] for row in timings
              if row["backend"] != "torch" and row["x_vs_torch"] is not None}
    ratios.update(gpu_check_benches.ratios(children))
    print_json_line("gpu_check", [{"device": device, "checks": len(checks), "failed": len(failed),
                                   "report": str(report), "generation": generation}], ratios)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
