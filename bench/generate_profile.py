"""`bench_generate.py --profile`: where one decode step of the generation workload goes.

The workload is the bench's own (P prompts x n samples) with `ignore_eos`, so every decode step holds all P x n
sequences (batch 64 at the defaults) and the steps measured are alike. Three measurements on one warm engine:
1. wall time of `--profile-steps` decode steps, plain (the median is "the step");
2. as many more under torch.profiler: each op's self time, summed per category (below), as a share of those steps'
   wall time, shown against the plain step;
3. the GEMM shapes of the profiled steps replayed alone (F.linear on fresh tensors of the same shapes and dtype, the
   weight in its [out, in] layout as the model holds it): the time the step's matrix multiplies need by themselves.

Categories: GEMM (aten mm/addmm/bmm), attention (the attention ops), sampling (everything the engine runs inside its
"tao.sample" profiler range, `ops.sample` included), KV write (write_kv_cache, copy_blocks), small ops (every other
op: norms, rotary, activation, adds, copies, index math), scheduler/Python (the plain step's wall time not spent in
any op: scheduling, batch building, accepting tokens, detokenizing). The profiler adds a little to each op's self
time, so the ops' shares are if anything overestimated and scheduler/Python's underestimated.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from common import time_call

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int8pack_mm", "mkldnn::_linear_pointwise")
ATTENTION_OPS = ("attention",)  # any op whose name contains it (tao_engine::paged_decode_attention, sdpa, ...)
KV_OPS = ("tao_engine::write_kv_cache", "tao_engine::copy_blocks", "aten::index_copy_")
SAMPLE_RANGE = "tao.sample"  # the engine's record_function range around its sampler
CATEGORIES = ("GEMM", "attention", "sampling", "KV write", "small ops", "scheduler/Python")


def _category(event: Any) -> str:
    parent = event
    while parent is not None:
        if parent.name == SAMPLE_RANGE:
            return "sampling"
        parent = parent.cpu_parent
    name = event.name
    if name in GEMM_OPS:
        return "GEMM"
    if any(key in name for key in ATTENTION_OPS):
        return "attention"
    if name in KV_OPS:
        return "KV write"
    return "small ops"


def _decode_step(engine: Any) -> tuple[float, int]:
    """One engine step: (wall seconds, decode tokens it ran; 0 for a prefill step)."""
    before = engine.stats()["decode_tokens"]
    start = time.perf_counter()
    engine.step()
    seconds = time.perf_counter() - start
    return seconds, engine.stats()["decode_tokens"] - before


def _steps_at_full_batch(engine: Any, count: int, batch: int) -> list[float]:
    times: list[float] = []
    while len(times) < count:
        if not engine.has_unfinished():
            raise RuntimeError("generate_profile: the requests finished before enough decode steps ran")
        seconds, tokens = _decode_step(engine)
        if tokens == batch:
            times.append(seconds)
    return times


def _replay_gemms(shapes: Counter, dtype: torch.dtype, steps: int) -> tuple[float, list[dict[str, object]]]:
    """Seconds per step of the recorded F.linear shapes run alone, and one row per shape."""
    total = 0.0
    rows = []
    for (x_shape, w_shape, bias), count in sorted(shapes.items()):
        x = torch.randn(x_shape, dtype=dtype)
        w = torch.randn(w_shape, dtype=dtype) / w_shape[-1] ** 0.5
        b = torch.randn(w_shape[0], dtype=dtype) if bias else None
        seconds = time_call(lambda x=x, w=w, b=b: F.linear(x, w, b), reps=7, warmup=2)
        per_step = count / steps
        total += seconds * per_step
        flop = 2 * x.numel() // x_shape[-1] * w_shape[0] * w_shape[1]
        rows.append({"x": "x".join(map(str, x_shape)), "weight": "x".join(map(str, w_shape)), "per step": per_step,
                     "ms each": seconds * 1e3, "GFLOP/s": flop / seconds / 1e9})
    return total, rows


def profile_decode(engine: Any, prompts: list[Any], sampling: Any, steps: int) -> dict[str, Any]:
    """The breakdown of a decode step at batch len(prompts) * sampling.n; see the module docstring."""
    from torch.profiler import ProfilerActivity, profile

    batch = len(prompts) * sampling.n
    needed = 3 + 2 * steps  # warm-up steps, then the plain and the profiled ones
    if sampling.max_tokens < needed + 1:
        raise ValueError(f"--profile needs --max-tokens >= {needed + 1} for {steps} profiled steps")
    for prompt in prompts:
        engine.add_request(prompt, sampling)
    _steps_at_full_batch(engine, 3, batch)
    plain = _steps_at_full_batch(engine, steps, batch)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        profiled = _steps_at_full_batch(engine, steps, batch)
    while engine.has_unfinished():
        engine.step()
    step_s = statistics.median(plain)
    per_category = dict.fromkeys(CATEGORIES, 0.0)
    shapes: Counter = Counter()
    op_seconds = Counter()
    for event in prof.events():
        if event.name == SAMPLE_RANGE:
            continue  # a range, not an op: its ops are counted themselves
        seconds = event.self_cpu_time_total / 1e6
        category = _category(event)
        per_category[category] += seconds
        if category == "small ops":
            op_seconds[event.name] += seconds
        if event.name == "aten::linear":
            x_shape, w_shape, b_shape = (tuple(s) for s in event.input_shapes[:3])
            shapes[(x_shape, w_shape, bool(b_shape))] += 1
    # Shares of the profiled steps' own wall time (what they ran besides their ops is scheduler/Python), applied to
    # the plain step: the two windows see the same work, and shares survive a machine whose load changes between them.
    profiled_s = sum(profiled)
    per_category["scheduler/Python"] = max(0.0, profiled_s - sum(per_category.values()))
    shares = {key: value / profiled_s for key, value in per_category.items()}
    dtype = next(engine.model.parameters()).dtype
    gemm_replay_s, gemm_rows = _replay_gemms(shapes, dtype, steps)
    table = [{"part": "step (plain, median)", "ms/step": step_s * 1e3, "share": 1.0}]
    table.append({"part": "GEMM replayed alone", "ms/step": gemm_replay_s * 1e3, "share": gemm_replay_s / step_s})
    table += [{"part": name, "ms/step": share * step_s * 1e3, "share": share} for name, share in shares.items()]
    top_small = [{"op": name, "share": s / profiled_s} for name, s in op_seconds.most_common(8)]
    return {
        "batch": batch,
        "steps": steps,
        "step_ms": step_s * 1e3,
        "profiled_step_ms": statistics.median(profiled) * 1e3,
        "gemm_replay_ms": gemm_replay_s * 1e3,
        "decode_gemm_share": gemm_replay_s / step_s,
        "step_over_gemm": step_s / gemm_replay_s,
        "category_shares": shares,
        "table": table,
        "gemm_shapes": gemm_rows,
        "top_small_ops": top_small,
    }
