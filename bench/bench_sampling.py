"""sample: the torch reference op vs transformers' sampling path (logits warpers + softmax + multinomial), [64, 49152].

Settings (each a row group): the headline top-k 50 + top-p 0.9 at T 0.7, top-p 0.9 alone, plain T 1.0 and greedy.
Reports time and achieved read bandwidth of the fp32 logits beside a floor: one streaming read of the same logits by
ATen (`amax` over the vocab dim). transformers' path (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
softmax, torch.multinomial; argmax when greedy) is the peer: it draws from a global generator and returns no
log-probs, so it does less than the op. Ends with one JSON line whose ratios are time(torch op) / time(transformers)
per setting (below 1: the op is faster).
Run: .venv/bin/python bench/bench_sampling.py [--rows 64] [--vocab 49152] [--reps 5] [--device cpu]
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
    "greedy": (0.0, 0, 1.0, 0.0),
}


def _transformers_sampler(temperature: float, top_k: int, top_p: float):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if temperature > 0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))

    def run(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        if temperature == 0:
            return logits.argmax(dim=-1)
        scores = warpers(input_ids, logits)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--scale", type=float, default=3.0, help="std of the random logits (3: peaked like an LM)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    from tao_engine import ops

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * args.scale).to(args.device)  # [B, V] fp32
    nbytes = logits.numel() * logits.element_size()
    input_ids = torch.zeros(args.rows, 1, dtype=torch.int64, device=args.device)  # the warpers' unused argument
    seeds = torch.randint(0, 2**62, (args.rows,), generator=gen).to(args.device)
    steps = torch.zeros(args.rows, dtype=torch.int64, device=args.device)

    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    floor = time_call(lambda: torch.amax(logits, dim=-1), reps=args.reps)
    rows.append({"setting": "-", "provider": "read floor (amax)", "ms": floor * 1e3, "GB/s": nbytes / floor / 1e9})
    for name, (temperature, top_k, top_p, min_p) in SETTINGS.items():

        def full(value: float, dtype: torch.dtype) -> torch.Tensor:
            return torch.full((args.rows,), value, dtype=dtype, device=args.device)

        op_args = (
            logits,
            full(temperature, torch.float32),
            full(top_k, torch.int64),
            full(top_p, torch.float32),
            full(min_p, torch.float32),
            seeds,
            steps,
        )
        hf = _transformers_sampler(temperature, top_k, top_p)
        providers = {
            "torch op": lambda op_args=op_args: ops.sample(*op_args, backend="torch"),
            "transformers": lambda hf=hf: hf(logits, input_ids),
        }
        times = {}
        for provider, fn in providers.items():
            seconds = time_call(fn, reps=args.reps)
            times[provider] = seconds
            rows.append({"setting": name, "provider": provider, "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9})
        ratios[f"time torch/transformers {name}"] = times["torch op"] / times["transformers"]

    print(f"sample [{args.rows}, {args.vocab}] fp32 logits (std {args.scale}) on {args.device}, median of {args.reps}")
    print_table(rows)
    print_json_line("sampling", rows, ratios)


if __name__ == "__main__":
    main()
