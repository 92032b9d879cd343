"""Paged KV cache writes: `write_kv_cache` (the new tokens' K/V into their slots) and `copy_blocks` (copy-on-write of
whole blocks in every layer), every provider of each op in one run (torch reference, torch.compile of it, and the
compiled kernels where the op has them: triton and cuda on a GPU, cpp on the CPU).

write_kv_cache: a decode step (64 tokens, one per sequence) and a prefill chunk (4096 tokens) into slots scattered
over a cache of 64 sequences x 2048 tokens. copy_blocks: 64 blocks (one copy-on-write per sequence) in every layer.
Head configs: `smollm2` (3 KV heads of dimension 64, 30 layers; the CPU default) and, on a GPU, `llama8b` (8 x 128,
32 layers). GB/s = bytes read + written by the op / time.
Ends with one JSON line (bench/common.py). Run: .venv/bin/python bench/bench_kv_cache.py [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from op_bench import (  # noqa: E402
    TOLERANCES,
    Report,
    add_dtypes_arg,
    add_names_arg,
    bench_parser,
    chosen_dtypes,
    chosen_names,
    dtype_name,
    op_providers,
    run_providers,
)

BLOCK_SIZE = 16


@dataclass(frozen=True)
class Heads:
    kv_heads: int
    head_dim: int
    layers: int
    cache_tokens: int  # slots in one layer's cache


HEADS = {
    "smollm2": Heads(3, 64, 30, 64 * 2048),
    "llama8b": Heads(8, 128, 32, 64 * 2048),
    "tiny": Heads(2, 16, 2, 8 * 48),  # --quick
}


def _write_section(name: str, heads: Heads, tokens: int, dtype: torch.dtype, args: argparse.Namespace,
                   reps: int) -> tuple[list[dict[str, object]], dict[str, float], bool]:
    gen = torch.Generator().manual_seed(0)
    dev = args.device
    cache_shape = (heads.cache_tokens // BLOCK_SIZE, BLOCK_SIZE, heads.kv_heads, heads.head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(dev, dtype)
    v_cache = torch.randn(cache_shape, generator=gen).to(dev, dtype)
    k = torch.randn(tokens, heads.kv_heads, heads.head_dim, generator=gen).to(dev, dtype)  # [N, Hkv, D]
    v = torch.randn(tokens, heads.kv_heads, heads.head_dim, generator=gen).to(dev, dtype)
    slots = torch.randperm(heads.cache_tokens, generator=gen)[:tokens].to(dev)  # [N] distinct, scattered

    def make(fn):
        k_out, v_out = k_cache.clone(), v_cache.clone()  # each provider writes its own copy

        def call():
            fn(k, v, k_out, v_out, slots)
            return k_out, v_out

        return call

    providers = op_providers("write_kv_cache", dev, args.providers)
    expected = make(providers[0].fn)()
    nbytes = 2 * k.numel() * k.element_size() * 2  # K and V rows, read once and written once
    label = {"op": "write_kv_cache", "shape": f"{name} {tokens} tokens {heads.kv_heads}x{heads.head_dim}",
             "dtype": dtype_name(dtype)}
    rows, ok = run_providers(providers, make, expected, TOLERANCES[dtype], dev, reps, label, nbytes=nbytes)
    return rows, ok, f"write_kv_cache {name} {tokens} {dtype_name(dtype)}"


def _copy_section(name: str, heads: Heads, copies: int, dtype: torch.dtype, args: argparse.Namespace,
                  reps: int) -> tuple[list[dict[str, object]], dict[str, float], bool]:
    gen = torch.Generator().manual_seed(1)
    dev = args.device
    # A small pool per layer is enough: the copy's cost does not depend on where the blocks sit.
    cache_shape = (3 * copies, BLOCK_SIZE, heads.kv_heads, heads.head_dim)
    k_caches = [torch.randn(cache_shape, generator=gen).to(dev, dtype) for _ in range(heads.layers)]
    v_caches = [torch.randn(cache_shape, generator=gen).to(dev, dtype) for _ in range(heads.layers)]
    order = torch.randperm(3 * copies, generator=gen)
    src, dst = order[:copies].to(dev), order[copies : 2 * copies].to(dev)  # disjoint: repeating a copy is a no-op

    def make(fn):
        k_out, v_out = [c.clone() for c in k_caches], [c.clone() for c in v_caches]

        def call():
            fn(k_out, v_out, src, dst)
            return k_out, v_out

        return call

    providers = op_providers("copy_blocks", dev, args.providers)
    expected = make(providers[0].fn)()
    block_bytes = BLOCK_SIZE * heads.kv_heads * heads.head_dim * k_caches[0].element_size()
    nbytes = 2 * heads.layers * copies * block_bytes * 2  # K and V blocks of every layer, read and written
    label = {"op": "copy_blocks", "shape": f"{name} {copies} blocks x {heads.layers} layers",
             "dtype": dtype_name(dtype)}
    rows, ok = run_providers(providers, make, expected, TOLERANCES[dtype], dev, reps, label, nbytes=nbytes)
    return rows, ok, f"copy_blocks {name} {dtype_name(dtype)}"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, reps=20)
    add_names_arg(parser, "--heads", HEADS)
    add_dtypes_arg(parser)
    args = parser.parse_args(argv)
    names = chosen_names(args, "--heads", HEADS)
    dtypes = chosen_dtypes(args)
    reps = 2 if args.quick else args.reps
    write_tokens = (5, 33) if args.quick else (64, 4096)
    copies = 3 if args.quick else 64

    report = Report("kv_cache")
    for name in names:
        for dtype in dtypes:
            sections = [_write_section(name, HEADS[name], n, dtype, args, reps) for n in write_tokens]
            sections.append(_copy_section(name, HEADS[name], copies, dtype, args, reps))
            for section in sections:
                report.add(*section)
    return report.finish(f"KV cache writes on {args.device}, block {BLOCK_SIZE}, median of {reps}")


if __name__ == "__main__":
    sys.exit(main())
