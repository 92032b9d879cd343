"""Timings of bench/gpu_check.py: every backend of each op (cuda, triton, torch reference) at realistic shapes
(SmolLM2-135M: vocabulary 49152, hidden 576, 9 query heads over 3 KV heads of dimension 64), timed with CUDA events,
and the engine's end-to-end generation on the GPU."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from op_bench import time_ms

DEVICE = "cuda"
VOCAB, HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 49152, 576, 9, 3, 64


def _workloads() -> list[tuple[str, str, Callable[[str], Callable[[], object]]]]:
    """(op, shape description, make(backend) -> a call of the op on that backend)."""
    from tao_engine.ops.advantages import group_advantages
    from tao_engine.ops.kv_cache import write_kv_cache
    from tao_engine.ops.linear_logprobs import linear_logprobs
    from tao_engine.ops.logprobs import token_logprobs
    from tao_engine.ops.paged_attention import paged_decode_attention
    from tao_engine.ops.policy_loss import policy_loss
    from tao_engine.ops.rms_norm import rms_norm
    from tao_engine.ops.sampling import sample

    bf16 = torch.bfloat16
    logits = torch.randn(4096, VOCAB, device=DEVICE, dtype=bf16) * 3
    targets = torch.randint(0, VOCAB, (4096,), device=DEVICE)
    hidden = torch.randn(4096, HIDDEN, device=DEVICE, dtype=bf16).requires_grad_()
    weight = (torch.randn(VOCAB, HIDDEN, device=DEVICE, dtype=bf16) * 0.05).requires_grad_()

    def linear_fwd_bwd(backend: str) -> Callable[[], object]:
        def run() -> None:
            lp = linear_logprobs(hidden, weight, targets, backend=backend)
            lp.sum().backward()

        return run

    batch, context, block_size = 64, 512, 16
    blocks = batch * context // block_size
    k_cache = torch.randn(blocks, block_size, KV_HEADS, HEAD_DIM, device=DEVICE, dtype=bf16)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(blocks, device=DEVICE).int().view(batch, context // block_size)
    lens = torch.full((batch,), context, device=DEVICE)
    q = torch.randn(batch, HEADS, HEAD_DIM, device=DEVICE, dtype=bf16)
    k_new = torch.randn(batch, KV_HEADS, HEAD_DIM, device=DEVICE, dtype=bf16)
    slots = torch.randperm(blocks * block_size, device=DEVICE)[:batch]

    rows = 64
    sample_logits = torch.randn(rows, VOCAB, device=DEVICE) * 4
    params = {
        "temperature": torch.full((rows,), 0.7, device=DEVICE),
        "top_k": torch.full((rows,), 50, device=DEVICE, dtype=torch.long),
        "top_p": torch.full((rows,), 0.9, device=DEVICE),
        "min_p": torch.zeros(rows, device=DEVICE),
        "seeds": torch.arange(rows, device=DEVICE),
        "steps": torch.zeros(rows, device=DEVICE, dtype=torch.long),
    }
    params_p_only = {**params, "top_k": torch.zeros(rows, device=DEVICE, dtype=torch.long)}

    lp_b, lp_t = 64, 1024
    new_lp = (-torch.rand(lp_b, lp_t, device=DEVICE) * 3).requires_grad_()
    old_lp = new_lp.detach() + torch.randn(lp_b, lp_t, device=DEVICE) * 0.1
    adv = torch.randn(lp_b, device=DEVICE)
    mask = torch.rand(lp_b, lp_t, device=DEVICE) < 0.9

    def loss_fwd_bwd(backend: str) -> Callable[[], object]:
        def run() -> None:
            out = policy_loss(new_lp, old_lp, adv, mask, backend=backend, loss_agg="seq_mean_token_mean")
            out.loss.backward()

        return run

    rewards = torch.randn(512, 8, device=DEVICE)
    x = torch.randn(4096, HIDDEN, device=DEVICE, dtype=bf16)
    norm_w = torch.randn(HIDDEN, device=DEVICE, dtype=bf16)
    return [
        ("token_logprobs", "[4096, 49152] bf16", lambda b: lambda: token_logprobs(logits, targets, backend=b)),
        ("linear_logprobs", "fwd+bwd N=4096 H=576 V=49152 bf16", linear_fwd_bwd),
        ("paged_decode_attention", "64 seqs x 512 ctx, 9/3 heads, D=64 bf16",
         lambda b: lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, HEAD_DIM**-0.5, backend=b)),
        ("write_kv_cache", "64 tokens, 3x64 bf16",
         lambda b: lambda: write_kv_cache(k_new, k_new, k_cache, v_cache, slots, backend=b)),
        ("sample", "[64, 49152] T=0.7 top-k 50 top-p 0.9",
         lambda b: lambda: sample(sample_logits, *params.values(), backend=b)),
        ("sample", "[64, 49152] T=0.7 top-p 0.9 (no top-k)",
         lambda b: lambda: sample(sample_logits, *params_p_only.values(), backend=b)),
        ("policy_loss", "fwd+bwd [64, 1024]", loss_fwd_bwd),
        ("group_advantages", "[512, 8] mean_std", lambda b: lambda: group_advantages(rewards, "mean_std", backend=b)),
        ("rms_norm", "[4096, 576] bf16", lambda b: lambda: rms_norm(x, norm_w, 1e-5, backend=b)),
    ]


def time_ops(backends_of: Callable[[str], list[str]]) -> list[dict[str, object]]:
    """One row per (op, shape, backend): ms per call, and speed-up over the torch reference in the same run."""
    rows: list[dict[str, object]] = []
    for op, shape, make in _workloads():
        timings: dict[str, float | str] = {}
        for backend in ["torch", *backends_of(op)]:
            try:
                timings[backend] = time_ms(make(backend), DEVICE, reps=20, warmup=3)
            except Exception as exc:  # a failing backend is reported, the others still run
                timings[backend] = f"error: {type(exc).__name__}: {exc}"[:120]
        ref = timings.get("torch")
        for backend, ms in timings.items():
            speedup = ref / ms if isinstance(ms, float) and isinstance(ref, float) else None
            rows.append({"op": op, "shape": shape, "backend": backend,
                         "ms": ms if isinstance(ms, float) else None,
                         "x_vs_torch": round(speedup, 2) if speedup else None,
                         "note": "" if isinstance(ms, float) else ms})
    return rows


def time_generation(max_tokens: int = 64, prompts: int = 8, n: int = 8) -> dict[str, object]:
    """The engine's end-to-end generation on the GPU (bench/bench_generate.py's workload), or why it was skipped."""
    try:
        from tao_engine.bundled import smollm2_gguf_path
        from tao_engine.engine import Engine, EngineConfig, SamplingParams
        from tao_engine.gguf_import import import_gguf

        gguf = smollm2_gguf_path()
    except Exception as exc:
        return {"skipped": f"SmolLM2 is not available: {type(exc).__name__}: {exc}"}
    from bench_generate import QUESTIONS

    chats = [[{"role": "user", "content": question}] for question in QUESTIONS[:prompts]]
    rows: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = import_gguf(gguf, Path(tmp) / "smollm2")
        for dtype in ("bfloat16", "float32"):
            try:
                engine = Engine(model_dir, EngineConfig(dtype=dtype, device=DEVICE))
                engine.generate(chats[:1], SamplingParams(n=2, max_tokens=4, seed=0))  # warm-up
                sampling = SamplingParams(n=n, temperature=0.7, top_p=0.9, max_tokens=max_tokens, seed=0)
                torch.cuda.synchronize()
                start = time.perf_counter()
                outputs = engine.generate(chats, sampling)
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                generated = sum(len(s.token_ids) for o in outputs for s in o.samples)
                rows[dtype] = {"seconds": round(elapsed, 3), "generated": generated,
                               "tok/s": round(generated / elapsed, 1)}
            except Exception as exc:
                rows[dtype] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return rows
