"""paged_prefill_attention: causal attention of packed ragged queries over the paged KV cache, every provider of the
op in one run: the torch reference, torch.compile of it, triton (CUDA only), flash-attn (CUDA, when installed and the
block size is a multiple of 256), and a non-paged ceiling: SDPA on contiguous K/V gathered before timing.

Workloads (block size 16 unless --block-size; sequences' blocks shuffled as a block manager's free list leaves them):
- `prefill`: whole prompts, no cached prefix (q_len = context);
- `extend`: n samples of each prompt extend the prompt's cached, SHARED blocks by q_len new tokens each (the case the
  kernel's grid order serves from L2 on a GPU).
Shapes: `smollm2` heads (9 query over 3 KV heads of dimension 64) and, on a GPU, `llama8b` (32 over 8, dimension 128).
TFLOP/s counts 4 * D flops per (query head, query, key it sees); beside it, the device's dense matmul TFLOP/s measured
in the same run (torch.matmul of two 4096 x 4096 matrices in the same dtype) and each provider's share of it.
Ends with one JSON line (bench/common.py). Run: .venv/bin/python bench/bench_paged_prefill_attention.py [--quick]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from op_bench import (  # noqa: E402
    TOLERANCES,
    Provider,
    Report,
    add_dtypes_arg,
    add_names_arg,
    bench_parser,
    chosen_dtypes,
    chosen_names,
    dtype_name,
    op_providers,
    run_providers,
    time_ms,
)


@dataclass(frozen=True)
class Shape:
    prompts: int  # distinct prompts
    samples: int  # sequences per prompt (extend) ; 1 for prefill
    prompt_len: int  # cached prefix per prompt (extend) or the whole prompt (prefill)
    q_len: int  # new tokens per sequence (extend); prefill: = prompt_len
    q_heads: int
    kv_heads: int
    head_dim: int


HEADS = {"smollm2": (9, 3, 64), "llama8b": (32, 8, 128), "tiny": (4, 2, 16)}
# workload -> (prompts, samples, prompt_len, q_len) per device class
WORKLOADS = {
    "cuda": {"prefill": (16, 1, 1024, 1024), "extend": (8, 8, 1024, 64)},
    "cpu": {"prefill": (4, 1, 256, 256), "extend": (2, 4, 256, 32)},
    "quick": {"prefill": (2, 1, 37, 37), "extend": (2, 3, 33, 5)},
}


def make_inputs(shape: Shape, extend: bool, block_size: int, dtype: torch.dtype, device: str):
    """q [N, Hq, D], caches, cu_seqlens_q [B + 1], tables [B, M], context lens [B], max_seqlen_q, max_seqlen_k. In
    `extend`, the samples of a prompt share its full prompt blocks; each owns its partial and new blocks."""
    gen = torch.Generator().manual_seed(0)
    b = shape.prompts * shape.samples
    ctx = shape.prompt_len + shape.q_len if extend else shape.prompt_len
    shared = shape.prompt_len // block_size if extend else 0  # full prompt blocks shared by a prompt's samples
    per_seq = -(-ctx // block_size) - shared
    num_blocks = shape.prompts * shared + b * per_seq
    order = torch.randperm(num_blocks, generator=gen)
    prompt_blocks = order[: shape.prompts * shared].view(shape.prompts, shared)
    own_blocks = order[shape.prompts * shared :].view(b, per_seq)
    tables = torch.cat([prompt_blocks.repeat_interleave(shape.samples, 0), own_blocks], 1).int()  # [B, M]
    cache_shape = (num_blocks, block_size, shape.kv_heads, shape.head_dim)
    k_cache, v_cache = torch.randn(cache_shape, generator=gen), torch.randn(cache_shape, generator=gen)
    q = torch.randn(b * shape.q_len, shape.q_heads, shape.head_dim, generator=gen)
    cu = torch.arange(b + 1, dtype=torch.int32) * shape.q_len
    lens = torch.full((b,), ctx, dtype=torch.int32)
    floats = [t.to(device, dtype) for t in (q, k_cache, v_cache)]
    return (*floats, *(t.to(device) for t in (cu, tables, lens)), shape.q_len, ctx)


def causal_flops(shape: Shape, ctx: int) -> float:
    """4 * D flops (QK^T and PV, multiply-add each) per (query head, query, key it sees)."""
    first = ctx - shape.q_len  # keys before the first query
    seen = shape.q_len * first + shape.q_len * (shape.q_len + 1) // 2  # per sequence
    return 4.0 * shape.head_dim * shape.q_heads * seen * shape.prompts * shape.samples


def dense_sdpa(inputs) -> Provider:
    """SDPA over contiguous [B, Hkv, L, D] K/V gathered before timing (every sequence has the same q_len and context
    here): the attention time without paging, a ceiling for the paged kernels."""
    from torch.nn.attention.bias import causal_lower_right

    q, k_cache, v_cache, _, tables, lens, q_len, ctx = inputs
    b, hkv = tables.shape[0], k_cache.shape[2]
    keys = k_cache[tables.long()].flatten(1, 2)[:, :ctx].transpose(1, 2).contiguous()  # [B, Hkv, L, D]
    values = v_cache[tables.long()].flatten(1, 2)[:, :ctx].transpose(1, 2).contiguous()
    mask = causal_lower_right(q_len, ctx)

    def run(q, *_):
        grouped = q.view(b, q_len, q.shape[1], q.shape[2]).transpose(1, 2)  # [B, Hq, T, D]
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, enable_gqa=q.shape[1] != hkv)
        return out.transpose(1, 2).reshape(q.shape)

    return Provider("sdpa dense (no paging)", run)


def flash_attn_provider(device: str, block_size: int) -> Provider:
    from tao_engine.ops import paged_attention_flash

    ok, why = paged_attention_flash.flash_attn_probe()
    if ok and block_size % paged_attention_flash.PAGE_MULTIPLE:
        ok, why = False, f"flash-attn's paged KV needs --block-size a multiple of {paged_attention_flash.PAGE_MULTIPLE}"
    return Provider("flash_attn", paged_attention_flash.prefill if ok and device == "cuda" else None, why)


def matmul_tflops(dtype: torch.dtype, device: str, reps: int) -> float:
    n = 4096 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ a, device, max(reps, 3))
    return 2 * n**3 / (ms / 1e3) / 1e12


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, reps=10)
    add_names_arg(parser, "--shapes", HEADS)
    add_dtypes_arg(parser)
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args(argv)
    shape_names = chosen_names(args, "--shapes", HEADS)
    dtypes = chosen_dtypes(args)
    reps = 2 if args.quick else args.reps
    workloads = WORKLOADS["quick" if args.quick else args.device]

    providers = op_providers("paged_prefill_attention", args.device, args.providers)
    report = Report("paged_prefill_attention")
    for dtype in dtypes:
        ceiling = matmul_tflops(dtype, args.device, reps)
        report.ratios[f"matmul TFLOP/s {dtype_name(dtype)}"] = ceiling
        print(f"dense matmul ceiling on {args.device} in {dtype_name(dtype)}: {ceiling:.2f} TFLOP/s")
        for name in shape_names:
            for workload, (prompts, samples, prompt_len, q_len) in workloads.items():
                extend = workload == "extend"
                shape = Shape(prompts, samples, prompt_len, q_len if extend else prompt_len, *HEADS[name])
                inputs = make_inputs(shape, extend, args.block_size, dtype, args.device)
                scale = shape.head_dim**-0.5

                def make(fn, inputs=inputs, scale=scale):
                    return lambda: fn(*inputs, scale)

                expected = make(providers[0].fn)()
                everyone = [*providers, dense_sdpa(inputs), flash_attn_provider(args.device, args.block_size)]
                label = {"workload": f"{workload} {name} {shape.prompts}x{shape.samples} ctx {inputs[-1]} "
                                     f"q {shape.q_len}", "dtype": dtype_name(dtype)}
                section, ok = run_providers(everyone, make, expected, TOLERANCES[dtype], args.device, reps, label)
                flops = causal_flops(shape, inputs[-1])
                for row in section:
                    tflops = None if row["ms"] is None else flops / (row["ms"] / 1e3) / 1e12
                    row["TFLOP/s"] = tflops
                    row["% of matmul"] = None if tflops is None else 100 * tflops / ceiling
                    row["note"] = row.pop("note")  # the note last: it may be long
                report.add(section, ok, f"{workload} {name} {dtype_name(dtype)}")
                del inputs, expected
    return report.finish(f"paged_prefill_attention on {args.device}, block {args.block_size}, median of {reps}")


if __name__ == "__main__":
    sys.exit(main())
