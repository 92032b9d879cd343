"""The per-op benchmarks (bench/bench_<op>.py) at tiny shapes on the CPU (--quick), their output check, and the part
of bench/gpu_check.py that runs them.

Each bench runs in this process (one torch import and one torch.compile warm-up for all of them) and must end with a
JSON line that has a row for every provider: the torch reference, torch.compile, and the cpp kernel where the op has
one, each checked against the reference and timed; the GPU-only providers skipped with a note.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from gpu_check_benches import (  # noqa: E402
    NOT_OP_BENCHES,
    OP_BENCHES,
    ChildRun,
    markdown,
    ratios,
    run_op_benches,
    summary_rows,
)
from op_bench import (  # noqa: E402
    TOLERANCES,
    Provider,
    ProviderMismatch,
    check_output,
    max_error,
    run_providers,
)

# bench script -> (op names it times, whether that op has a cpp kernel)
BENCHES = {
    "bench_paged_attention.py": {"paged_decode_attention": True},
    "bench_kv_cache.py": {"write_kv_cache": True, "copy_blocks": False},
    "bench_policy_loss.py": {"policy_loss": True},
    "bench_advantages.py": {"group_advantages": True},
    "bench_rms_norm.py": {"rms_norm": True},
}
GPU_ONLY = {"triton", "cuda", "liger"}


def _cpp_available() -> bool:
    from tao_engine.ops.extension import extension_status

    return extension_status()[0]


def _run_bench(script: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), BENCH / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    code = module.main(["--quick", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1])


@pytest.mark.parametrize("script", sorted(BENCHES))
def test_bench_checks_and_times_every_provider(script: str, capsys: pytest.CaptureFixture[str]):
    code, summary = _run_bench(script, capsys)
    assert code == 0
    assert summary["machine"]["torch"] == torch.__version__
    rows = [row for row in summary["results"] if row.get("section") not in ("memory", "from logits")]
    expected = {"torch", "torch.compile"} | ({"cpp"} if any(BENCHES[script].values()) and _cpp_available() else set())
    timed = {row["provider"] for row in rows if row["check"] == "ok"}
    compile_failed = [row for row in rows if row["provider"] == "torch.compile" and row["check"] == "skipped"]
    for row in compile_failed:  # allowed on a machine where inductor cannot compile, never silently
        assert row["note"].startswith("torch.compile failed here"), row
    assert timed >= expected - ({"torch.compile"} if compile_failed else set()), rows
    for row in rows:
        if row["check"] == "ok":  # checked against the reference, then timed
            assert math.isfinite(row["ms"]) and row["ms"] > 0, row
            assert row["max err"] is not None and row["max err"] <= 1e-4, row
        else:
            assert row["check"] == "skipped" and row["ms"] is None and row["note"], row
            assert row["provider"] in GPU_ONLY | {"torch.compile", "cpp"}, row
    assert {row["provider"] for row in rows} >= expected
    assert any(key.endswith("speedup torch/torch.compile") for key in summary["ratios"]) or compile_failed


def test_policy_loss_bench_reports_memory_per_token_linear_in_n(capsys: pytest.CaptureFixture[str]):
    code, summary = _run_bench("bench_policy_loss.py", capsys)
    assert code == 0
    memory = [row for row in summary["results"] if row.get("section") == "memory"]
    assert {row["provider"] for row in memory} >= {"torch"}
    for provider in {row["provider"] for row in memory}:
        assert 0.9 < summary["ratios"][f"policy_loss saved bytes per token 4N/N {provider}"] < 1.1
    logits = {row["provider"]: row for row in summary["results"] if row.get("section") == "from logits"}
    assert logits["torch"]["check"] == logits["tao"]["check"] == "ok"
    assert logits["liger"]["check"] == "skipped" and "CUDA" in logits["liger"]["note"]


def test_check_output_rejects_a_wrong_tensor():
    expected = torch.randn(7, 129)
    assert check_output("p", expected + 1e-7, expected, 1e-4) < 1e-4
    wrong = expected.clone()
    wrong[3, 5] += 0.5
    with pytest.raises(ProviderMismatch, match="p: max error"):
        check_output("p", wrong, expected, 1e-4)
    with pytest.raises(ProviderMismatch):
        check_output("p", expected[:, :128], expected, 1e-4)  # wrong shape
    nan = expected.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ProviderMismatch):
        check_output("p", nan, expected, 1e-4)


def test_max_error_is_relative_and_walks_tuples_dataclasses_and_flags():
    @dataclass(frozen=True)
    class Out:
        value: torch.Tensor
        flags: torch.Tensor

    grad = torch.full((5,), 1e-6)
    assert max_error(grad * 1.5, grad) == pytest.approx(0.5)  # small gradients are not waved through
    flags = torch.tensor([True, False, True])
    assert max_error(Out(grad, flags), Out(grad, flags)) == 0
    assert max_error(Out(grad, ~flags), Out(grad, flags)) == math.inf
    assert max_error((grad, grad), (grad,)) == math.inf
    with_nan = torch.tensor([1.0, float("nan")])
    assert max_error(with_nan.clone(), with_nan) == 0  # NaN where the reference has NaN is agreement


def test_run_providers_fails_a_wrong_provider_and_does_not_time_it():
    x = torch.randn(7, 33)

    def make(fn):
        return lambda: fn(x)

    providers = [Provider("torch", torch.tanh), Provider("right", lambda t: torch.tanh(t.double()).float()),
                 Provider("wrong", lambda t: torch.tanh(t) + 1e-2), Provider("absent", None, "not here")]
    rows, passed = run_providers(providers, make, torch.tanh(x), TOLERANCES[torch.float32], "cpu", 2, {"op": "tanh"})
    by_name = {row["provider"]: row for row in rows}
    assert not passed
    assert by_name["right"]["check"] == "ok" and by_name["right"]["ms"] > 0
    assert by_name["wrong"]["check"] == "FAIL" and by_name["wrong"]["ms"] is None
    assert "max error" in by_name["wrong"]["note"]
    assert by_name["absent"]["check"] == "skipped" and by_name["absent"]["note"] == "not here"


def test_every_bench_script_is_an_op_bench_or_listed_as_not_one():
    scripts = {path.name for path in BENCH.glob("bench_*.py")}
    unclassified = scripts - set(OP_BENCHES) - set(NOT_OP_BENCHES)
    assert not unclassified, f"add {sorted(unclassified)} to OP_BENCHES or NOT_OP_BENCHES in gpu_check_benches.py"
    assert set(BENCHES) <= set(OP_BENCHES)


def test_gpu_check_runs_a_bench_in_a_child_and_keeps_its_table():
    runs = run_op_benches(("bench_advantages.py", "bench_nonexistent.py"),
                          extra_args=("--quick", "--device", "cpu", "--providers", "torch"))
    ok, missing = runs
    assert ok.result == "ok" and ok.returncode == 0, ok.error_tail
    assert ok.summary["bench"] == "group_advantages" and "provider" in ok.output
    assert missing.result == "missing"
    report = markdown(runs)
    assert "### bench_advantages.py (ok" in report and "mean_std" in report


def test_gpu_check_report_holds_each_bench_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import gpu_check

    run = ChildRun("bench_x.py", 0, 1.5, "provider  ms\ntorch     1.0", {"bench": "x", "ratios": {"a": 2.0}}, "")
    failed = ChildRun("bench_y.py", 1, 0.5, "", None, "Traceback: boom")
    path = gpu_check.write_report(tmp_path, "NVIDIA H100 80GB HBM3", [("Runs", summary_rows([run, failed]))],
                                  "\n## Output of each run\n" + markdown([run, failed]))
    assert path == tmp_path / "nvidia_h100_80gb_hbm3.md"
    text = path.read_text()
    assert "| bench_x.py | ok | 0 |" in text and "| bench_y.py | FAIL | 1 |" in text
    assert "torch     1.0" in text and "Traceback: boom" in text
    assert ratios([run, failed]) == {"x: a": 2.0}
    with pytest.raises(SystemExit):
        gpu_check.main(["--help"])
    assert "--skip-benches" in capsys.readouterr().out
