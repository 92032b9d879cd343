"""`bench_generate.py --profile`: where one decode step of the generation workload goes.

The workload is the bench's own (P prompts x n samples) with `ignore_eos`, so every decode step holds all P x n
sequences (batch 64 at the defaults) and the steps measured are alike. On one warm engine:
1. `--profile-steps` decode steps under torch.profiler: each op's self time, summed per category (below), as a share
   of those steps' own wall time; and the shapes of the step's matrix multiplies (aten::linear, or the engine's
   packed mkldnn linears);
2. as many rounds of one plain decode step followed by the step's GEMMs replayed alone: the same weights the step
   multiplies by, streamed from memory in forward order, the LM head included (the engine's packed matrices when it
   packs, else F.linear over every nn.Linear once), on inputs of the recorded batch. Interleaving the two keeps
   them under the same machine load;
   `decode_gemm_share` is the median over rounds of GEMM time / step time.

Categories: GEMM (aten mm/addmm/bmm), attention (the attention ops), sampling (everything the engine runs inside its
"tao.sample" profiler range, `ops.sample` included), KV write (write_kv_cache, copy_blocks), small ops (every other
op: norms, rotary, activation, adds, copies, index math), scheduler/Python (the profiled steps' wall time not spent
in any op: scheduling, batch building, accepting tokens, detokenizing). The profiler adds a little to each op's self
time, so the ops' shares are if anything overestimated and scheduler/Python's underestimated.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PACKED_GEMM = "mkldnn::_linear_pointwise"  # the engine's packed linears (EngineConfig.pack_linears)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_weight_int8pack_mm", PACKED_GEMM)
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


def _full_batch_step(engine: Any, batch: int) -> float:
    """Wall seconds of the next decode step that runs all `batch` sequences (prefill steps are run, not counted)."""
    while engine.has_unfinished():
        seconds, tokens = _decode_step(engine)
        if tokens == batch:
            return seconds
    raise RuntimeError("generate_profile: the requests finished before enough decode steps ran")


class _GemmReplay:
    """The step's GEMMs alone, in forward order, on fresh inputs of the step's batch: the engine's packed matrices
    (q|k|v, o, gate|up, down per layer, then the LM head) when it packs, else every nn.Linear of the model once."""

    def __init__(self, engine: Any, batch: int) -> None:
        packed = engine.runner.packed
        if packed is not None and packed.active:
            gemms = [lin for layer in packed.layers for lin in (layer.qkv, layer.o, layer.gate_up, layer.down)]
            self.gemms = [(g, g.in_features) for g in gemms + [packed.head]]
        else:
            self.gemms = [(lambda x, m=m: F.linear(x, m.weight, m.bias), m.in_features)
                          for m in engine.model.modules() if isinstance(m, nn.Linear)]
        self.inputs = {k: torch.randn(batch, k, dtype=engine.dtype) for _, k in self.gemms}

    @torch.inference_mode()
    def __call__(self) -> float:
        start = time.perf_counter()
        for gemm, k in self.gemms:
            gemm(self.inputs[k])
        return time.perf_counter() - start


def _shape_rows(shapes: Counter, steps: int, gemm_s: dict[tuple, float]) -> list[dict[str, object]]:
    rows = []
    for (x_shape, w_shape, _), count in sorted(shapes.items()):
        seconds = gemm_s.get((x_shape, w_shape))
        flop = 2 * x_shape[0] * w_shape[0] * w_shape[1]
        rows.append({"x": "x".join(map(str, x_shape)), "weight": "x".join(map(str, w_shape)), "per step": count / steps,
                     "ms each (in step)": None if seconds is None else seconds * 1e3,
                     "GFLOP/s": None if not seconds else flop / seconds / 1e9})
    return rows


def profile_decode(engine: Any, prompts: list[Any], sampling: Any, steps: int) -> dict[str, Any]:
    """The breakdown of a decode step at batch len(prompts) * sampling.n; see the module docstring."""
    from torch.profiler import ProfilerActivity, profile

    batch = len(prompts) * sampling.n
    needed = 3 + 2 * steps  # warm-up steps, then the profiled ones, then the plain / replay rounds
    if sampling.max_tokens < needed + 1:
        raise ValueError(f"--profile needs --max-tokens >= {needed + 1} for {steps} profiled steps")
    for prompt in prompts:
        engine.add_request(prompt, sampling)
    for _ in range(3):
        _full_batch_step(engine, batch)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        profiled = [_full_batch_step(engine, batch) for _ in range(steps)]
    replay = _GemmReplay(engine, batch)
    replay()  # warm
    rounds = [(_full_batch_step(engine, batch), replay()) for _ in range(steps)]
    while engine.has_unfinished():
        engine.step()

    per_category = dict.fromkeys(CATEGORIES, 0.0)
    shapes: Counter = Counter()
    in_step: Counter = Counter()  # seconds of each GEMM shape inside the profiled steps
    calls: Counter = Counter()
    op_seconds: Counter = Counter()
    for event in prof.events():
        if event.name == SAMPLE_RANGE:
            continue  # a range, not an op: its ops are counted themselves
        seconds = event.self_cpu_time_total / 1e6
        category = _category(event)
        per_category[category] += seconds
        if category == "small ops":
            op_seconds[event.name] += seconds
        if event.name in ("aten::linear", PACKED_GEMM):
            x_shape, w_shape, b_shape = (tuple(s) for s in event.input_shapes[:3])
            shapes[(x_shape, w_shape, bool(b_shape))] += 1
            in_step[(x_shape, w_shape)] += event.cpu_time_total / 1e6
            calls[(x_shape, w_shape)] += 1
    profiled_s = sum(profiled)
    per_category["scheduler/Python"] = max(0.0, profiled_s - sum(per_category.values()))
    shares = {key: value / profiled_s for key, value in per_category.items()}
    step_s = statistics.median(s for s, _ in rounds)
    gemm_s = statistics.median(g for _, g in rounds)
    gemm_share = statistics.median(g / s for s, g in rounds)  # per round: both under the same load
    gemm_each = {key: seconds / calls[key] for key, seconds in in_step.items()}
    table = [{"part": "step (plain, median)", "ms/step": step_s * 1e3, "share": 1.0},
             {"part": "GEMM replayed alone", "ms/step": gemm_s * 1e3, "share": gemm_share}]
    table += [{"part": name, "ms/step": share * step_s * 1e3, "share": share} for name, share in shares.items()]
    top_small = [{"op": name, "share": s / profiled_s} for name, s in op_seconds.most_common(8)]
    return {
        "batch": batch,
        "steps": steps,
        "step_ms": step_s * 1e3,
        "profiled_step_ms": statistics.median(profiled) * 1e3,
        "gemm_replay_ms": gemm_s * 1e3,
        "decode_gemm_share": gemm_share,
        "step_over_gemm": 1.0 / gemm_share,
        "category_shares": shares,
        "table": table,
        "gemm_shapes": _shape_rows(shapes, steps, gemm_each),
        "top_small_ops": top_small,
    }
