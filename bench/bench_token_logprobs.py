"""token_logprobs: the torch reference vs the compiled kernel (`cpp` on CPU, `cuda` on a GPU), [4096, 49152] logits.

Reports time and achieved read bandwidth (bytes of logits / time) beside a floor: one streaming read of the same
logits by ATen (`amax` over the vocab dim), the best any one-pass kernel can do on this machine. Ends with one JSON
line whose ratios are time(compiled) / time(torch) per dtype (below 1: the compiled kernel is faster).
Run: .venv/bin/python bench/bench_token_logprobs.py [--rows 4096] [--vocab 49152] [--reps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, from {sorted(DTYPES)}")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    from tao_engine import ops
    from tao_engine.ops.logprobs import token_logprobs_reference
    from tao_engine.ops.registry import all_ops

    compiled = "cuda" if args.device == "cuda" else "cpp"
    ok, why = all_ops()["token_logprobs"].available(compiled)
    if not ok:
        raise SystemExit(f"bench_token_logprobs: backend {compiled!r} is unavailable: {why}")

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(args.rows, args.vocab, generator=gen) * 3  # [N, V] fp32
    targets = torch.randint(0, args.vocab, (args.rows,), generator=gen).to(args.device)

    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    for name in args.dtypes.split(","):
        if name not in DTYPES:
            raise SystemExit(f"bench_token_logprobs: --dtypes: unknown dtype {name!r}; choose from {sorted(DTYPES)}")
        logits = base.to(DTYPES[name]).to(args.device)
        nbytes = logits.numel() * logits.element_size()
        expected = token_logprobs_reference(logits, targets, args.temperature)
        providers = {
            "read floor (amax)": lambda logits=logits: torch.amax(logits, dim=-1),
            "torch": lambda logits=logits: token_logprobs_reference(logits, targets, args.temperature),
            compiled: lambda logits=logits: ops.token_logprobs(logits, targets, args.temperature, backend=compiled),
        }
        times: dict[str, float] = {}
        for provider, fn in providers.items():
            seconds = time_call(fn, reps=args.reps)
            times[provider] = seconds
            error = None
            if provider != "read floor (amax)":
                error = (fn() - expected).abs().max().item()
            rows.append(
                {
                    "dtype": name,
                    "provider": provider,
                    "ms": seconds * 1e3,
                    "GB/s": nbytes / seconds / 1e9,
                    "max |diff| vs torch": error,
                }
            )
        ratios[f"time {compiled}/torch {name}"] = times[compiled] / times["torch"]
        del logits, expected

    print(f"token_logprobs [{args.rows}, {args.vocab}] on {args.device}, T={args.temperature}, median of {args.reps}")
    print_table(rows)
    print_json_line("token_logprobs", rows, ratios)


if __name__ == "__main__":
    main()
