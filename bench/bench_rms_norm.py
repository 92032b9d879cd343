"""rms_norm: y = w * x / sqrt(mean(x^2) + eps), every provider of the op in one run (torch reference, torch.compile of
it, the C++ kernel on the CPU and the triton kernel on a GPU).

Shapes [N, H]: 4096 tokens at SmolLM2's hidden size 576 and, on a GPU, at Llama-8B's 4096. GB/s = bytes of x read
and y written / time (the weight is negligible), the traffic of a memory-bound kernel.
Ends with one JSON line (bench/common.py). Run: .venv/bin/python bench/bench_rms_norm.py [--device cuda]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from op_bench import (  # noqa: E402
    TOLERANCES,
    Report,
    add_dtypes_arg,
    bench_parser,
    chosen_dtypes,
    dtype_name,
    op_providers,
    run_providers,
)

EPS = 1e-6


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, reps=20)
    add_dtypes_arg(parser)
    args = parser.parse_args(argv)
    dtypes = chosen_dtypes(args)
    shapes = ((7, 33),) if args.quick else (((4096, 576), (4096, 4096)) if args.device == "cuda" else ((4096, 576),))
    reps = 2 if args.quick else args.reps

    providers = op_providers("rms_norm", args.device, args.providers)
    report = Report("rms_norm")
    for tokens, hidden in shapes:
        for dtype in dtypes:
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(tokens, hidden, generator=gen).to(args.device, dtype)  # [N, H]
            weight = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(args.device, dtype)  # [H]

            def make(fn, x=x, weight=weight):
                return lambda: fn(x, weight, EPS)

            expected = make(providers[0].fn)()
            label = {"shape": f"[{tokens}, {hidden}]", "dtype": dtype_name(dtype)}
            section, ok = run_providers(providers, make, expected, TOLERANCES[dtype], args.device, reps, label,
                                        nbytes=2 * x.numel() * x.element_size())
            report.add(section, ok, f"rms_norm [{tokens}, {hidden}] {dtype_name(dtype)}")
    return report.finish(f"rms_norm on {args.device}, eps {EPS}, median of {reps}")


if __name__ == "__main__":
    sys.exit(main())
