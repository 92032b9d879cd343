"""CPU ops: the torch reference against the `cpp` kernels of tao_engine._C, one section per op, at SmolLM2 shapes.

Each section is one function in SECTIONS that returns its table rows and its ratios; `--ops` picks sections (all by
default). Every section prints its own table; the run ends with one JSON line holding every section's rows and
ratios (bench/common.py).

paged_decode_attention: one decode step of SmolLM2-135M's attention (9 query heads, 3 KV heads, head_dim 64, block
16) for 64 sequences x 512 tokens of context, caches holding exactly those blocks in shuffled order (as a block
manager's free list leaves them after some churn). GB/s = bytes of K and V read / time; the floor is one streaming
read of both caches by ATen (`sum`), the best a kernel that must read them all could do on this machine. The ratio
is time(torch) / time(cpp): above 1 the kernel is faster.

layer_ops: rms_norm, add_rms_norm, silu_and_mul and apply_rotary at SmolLM2's shapes for 64 and 2048 tokens.

Run: .venv/bin/python bench/bench_cpu_ops.py [--ops paged_decode_attention,layer_ops] [--reps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Rows = list[dict[str, object]]
Ratios = dict[str, float]


def _require_cpp(op: str) -> None:
    from tao_engine.ops.registry import all_ops

    ok, why = all_ops()[op].available("cpp")
    if not ok:
        raise SystemExit(f"bench_cpu_ops: the cpp backend of {op} is unavailable: {why}")


def bench_paged_decode_attention(args: argparse.Namespace) -> tuple[Rows, Ratios]:
    from tao_engine import ops
    from tao_engine.ops.paged_attention import paged_decode_attention_reference

    _require_cpp("paged_decode_attention")
    batch, context, hq, hkv, d, block_size = args.paged_batch, args.paged_context, 9, 3, 64, 16
    blocks_per_seq = -(-context // block_size)
    num_blocks = batch * blocks_per_seq
    gen = torch.Generator().manual_seed(0)
    tables = torch.randperm(num_blocks, generator=gen).view(batch, blocks_per_seq).int()  # [B, M], shuffled
    context_lens = torch.full((batch,), context, dtype=torch.int32)
    q32 = torch.randn(batch, hq, d, generator=gen)
    k32 = torch.randn(num_blocks, block_size, hkv, d, generator=gen)
    v32 = torch.randn(num_blocks, block_size, hkv, d, generator=gen)
    scale = d**-0.5
    print(
        f"paged_decode_attention: B={batch} x context {context}, Hq={hq}, Hkv={hkv}, D={d}, block {block_size}, "
        f"{torch.get_num_threads()} threads, median of {args.reps}"
    )

    rows: Rows = []
    ratios: Ratios = {}
    for name in args.paged_dtypes.split(","):
        if name not in DTYPES:
            raise SystemExit(f"bench_cpu_ops: --paged-dtypes: unknown dtype {name!r}; choose from {sorted(DTYPES)}")
        dtype = DTYPES[name]
        q, k_cache, v_cache = q32.to(dtype), k32.to(dtype), v32.to(dtype)
        kv_bytes = 2 * batch * context * hkv * d * k_cache.element_size()  # K and V rows the step reads

        def torch_ref(q=q, k_cache=k_cache, v_cache=v_cache):
            return paged_decode_attention_reference(q, k_cache, v_cache, tables, context_lens, scale)

        def cpp(q=q, k_cache=k_cache, v_cache=v_cache):
            return ops.paged_decode_attention(q, k_cache, v_cache, tables, context_lens, scale, backend="cpp")

        def floor(k_cache=k_cache, v_cache=v_cache):
            return k_cache.sum() + v_cache.sum()

        expected = torch_ref().double()
        times: dict[str, float] = {}
        for provider, fn in (("read floor (sum)", floor), ("torch", torch_ref), ("cpp", cpp)):
            seconds = time_call(fn, reps=args.reps, warmup=2)
            times[provider] = seconds
            error = None if provider == "read floor (sum)" else (fn().double() - expected).abs().max().item()
            rows.append(
                {
                    "op": "paged_decode_attention",
                    "dtype": name,
                    "provider": provider,
                    "ms": seconds * 1e3,
                    "GB/s": kv_bytes / seconds / 1e9,
                    "max |diff| vs torch": error,
                }
            )
        ratios[f"paged_decode_attention speedup torch/cpp {name}"] = times["torch"] / times["cpp"]
    return rows, ratios


def _layer_cases(tokens: int, dtype: torch.dtype) -> list[tuple[str, tuple[torch.Tensor, ...], tuple, int]]:
    """(op, tensor args, other args, bytes moved) for SmolLM2's decoder layer ops at `tokens` tokens."""
    from tao_engine.layers.rotary import RotaryEmbedding

    gen = torch.Generator().manual_seed(0)
    hidden, inter, hq, hkv, d = 576, 1536, 9, 3, 64

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(dtype)

    weight = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(dtype)
    cos, sin = RotaryEmbedding(d, 100000.0)(torch.arange(tokens) + 300)
    size = torch.tensor([], dtype=dtype).element_size()
    return [
        ("rms_norm", (rand(tokens, hidden), weight), (1e-5,), 2 * tokens * hidden * size),
        ("add_rms_norm", (rand(tokens, hidden), rand(tokens, hidden), weight), (1e-5,), 4 * tokens * hidden * size),
        ("silu_and_mul", (rand(tokens, inter), rand(tokens, inter)), (), 3 * tokens * inter * size),
        ("apply_rotary", (rand(tokens, hq, d), rand(tokens, hkv, d), cos, sin), (), 2 * tokens * (hq + hkv) * d * size),
    ]


def bench_layer_ops(args: argparse.Namespace) -> tuple[Rows, Ratios]:
    """The elementwise ops of a decoder layer (rms_norm, add_rms_norm, silu_and_mul, apply_rotary) at a decode
    step's 64 tokens and a prefill chunk's 2048: torch reference against the fused cpp kernel. GB/s = bytes of the
    inputs read and outputs written once / time."""
    from tao_engine import ops

    rows: Rows = []
    ratios: Ratios = {}
    print(f"decoder layer ops at SmolLM2 shapes, {torch.get_num_threads()} threads, median of {args.reps}")
    for name in args.layer_dtypes.split(","):
        dtype = DTYPES[name]
        for tokens in (64, 2048):
            for op, tensors, extra, nbytes in _layer_cases(tokens, dtype):
                _require_cpp(op)
                fn = getattr(ops, op)
                times = {}
                for backend in ("torch", "cpp"):
                    seconds = time_call(lambda fn=fn, t=tensors, e=extra, b=backend: fn(*t, *e, backend=b),
                                        reps=args.reps, warmup=2)
                    times[backend] = seconds
                    rows.append({"op": op, "tokens": tokens, "dtype": name, "provider": backend, "us": seconds * 1e6,
                                 "GB/s": nbytes / seconds / 1e9})
                ratios[f"{op} [{tokens}] {name} speedup torch/cpp"] = times["torch"] / times["cpp"]
    return rows, ratios


# name -> section; each returns (table rows, ratios) and prints its own header.
SECTIONS: dict[str, Callable[[argparse.Namespace], tuple[Rows, Ratios]]] = {
    "paged_decode_attention": bench_paged_decode_attention,
    "layer_ops": bench_layer_ops,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(SECTIONS), help=f"comma-separated sections, from {list(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--paged-batch", type=int, default=64)
    parser.add_argument("--paged-context", type=int, default=512)
    parser.add_argument("--paged-dtypes", default="float32", help=f"comma-separated, from {sorted(DTYPES)}")
    parser.add_argument("--layer-dtypes", default="float32,bfloat16", help=f"comma-separated, from {sorted(DTYPES)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.ops.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise SystemExit(f"bench_cpu_ops: --ops: unknown or no sections {unknown}; choose from {list(SECTIONS)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    all_rows: Rows = []
    all_ratios: Ratios = {}
    for name in chosen:
        rows, ratios = SECTIONS[name](args)
        print_table(rows)
        print()
        all_rows += rows
        all_ratios.update(ratios)
    print_json_line("cpu_ops", all_rows, all_ratios)


if __name__ == "__main__":
    main()
