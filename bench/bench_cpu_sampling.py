"""sample on CPU, [64, 49152] fp32: the cpp backend vs the torch reference op vs a plain sort-based torch sampler.

Settings: top-k 50 + top-p 0.9 at T 0.7 (the headline), top-p 0.9 alone at T 1.0, and plain T 1.0. The logits are
peaked like an LM's: randn * scale (4 by default). Providers:
- sort-based torch: the textbook sampler (scale, full sort, top-k by position, softmax, cumsum, top-p mask,
  renormalize, inverse-CDF draw with the op's uniforms, log-probs); no multinomial, no generator;
- torch op: tao_engine's reference (`ops.sample(..., backend="torch")`);
- cpp: `ops.sample(..., backend="cpp")`, which must return the reference's very tokens (checked here).
Reports time and the read bandwidth of the logits beside a floor (ATen's `amax` over the vocab dim), and ends with one
JSON line whose ratios are time(sort-based) / time(cpp) and time(torch op) / time(cpp) per setting (the issue's
target: cpp >= 3x the sort-based sampler).
Run: .venv/bin/python bench/bench_cpu_sampling.py [--rows 64] [--vocab 49152] [--scale 4] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402

# name -> (temperature, top_k, top_p, min_p)
SETTINGS = {
    "top-k 50 + top-p 0.9, T 0.7": (0.7, 50, 0.9, 0.0),
    "top-p 0.9, T 1.0": (1.0, 0, 0.9, 0.0),
    "plain, T 1.0": (1.0, 0, 1.0, 0.0),
}


def sort_based_sample(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain way: sort the whole vocabulary, mask by position and cumulative mass, draw from the CDF."""
    values, ids = (logits / temperature).sort(dim=-1, descending=True)  # [B, V]
    if top_k > 0:
        values[:, top_k:] = float("-inf")
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)  # [B, V]
    pos = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:], right=True).clamp_(max=logits.shape[1] - 1)
    logprobs = (probs.gather(1, pos) / cdf[:, -1:].float()).log().squeeze(1)
    return ids.gather(1, pos).squeeze(1), logprobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--scale", type=float, default=4.0, help="std of the random logits (3-4: peaked like an LM)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    from tao_engine import ops
    from tao_engine.ops.sampling import sampling_uniforms

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, generator=gen) * args.scale  # [B, V] fp32
    nbytes = logits.numel() * logits.element_size()
    seeds = torch.randint(0, 2**62, (args.rows,), generator=gen)
    steps = torch.zeros(args.rows, dtype=torch.int64)
    uniforms = sampling_uniforms(seeds, steps)

    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    floor = time_call(lambda: torch.amax(logits, dim=-1), reps=args.reps)
    rows.append({"setting": "-", "provider": "read floor (amax)", "ms": floor * 1e3, "GB/s": nbytes / floor / 1e9})
    for name, (temperature, top_k, top_p, min_p) in SETTINGS.items():
        op_args = (
            logits,
            torch.full((args.rows,), temperature),
            torch.full((args.rows,), top_k),
            torch.full((args.rows,), top_p),
            torch.full((args.rows,), min_p),
            seeds,
            steps,
        )
        same = torch.equal(ops.sample(*op_args, backend="cpp")[0], ops.sample(*op_args, backend="torch")[0])
        providers = {
            "sort-based torch": lambda t=temperature, k=top_k, p=top_p: sort_based_sample(logits, t, k, p, uniforms),
            "torch op": lambda op_args=op_args: ops.sample(*op_args, backend="torch"),
            "cpp": lambda op_args=op_args: ops.sample(*op_args, backend="cpp"),
        }
        times = {}
        for provider, fn in providers.items():
            seconds = time_call(fn, reps=args.reps)
            times[provider] = seconds
            row = {"setting": name, "provider": provider, "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9}
            row["same tokens as torch op"] = same if provider == "cpp" else "-"
            rows.append(row)
        ratios[f"sort-based/cpp {name}"] = times["sort-based torch"] / times["cpp"]
        ratios[f"torch op/cpp {name}"] = times["torch op"] / times["cpp"]

    print(f"sample [{args.rows}, {args.vocab}] fp32 logits (std {args.scale}) on CPU, median of {args.reps}")
    print_table(rows)
    print_json_line("cpu_sampling", rows, ratios)


if __name__ == "__main__":
    main()
