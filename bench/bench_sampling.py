"""sample: the torch reference op vs transformers' sampling path (logits warpers + softmax + multinomial), [64, 49152]
on CPU; on a GPU also the triton backend (and cuda where built) against torch's sort-based sampler, [256, 131072].

Settings (each a row group): the headline top-k 50 + top-p 0.9 at T 0.7, top-p 0.9 alone, plain T 1.0 and greedy.
Reports time and achieved read bandwidth of the fp32 logits beside a floor: one streaming read of the same logits by
ATen (`amax` over the vocab dim). transformers' path (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
softmax, torch.multinomial; argmax when greedy) is the peer: it draws from a global generator and returns no
log-probs, so it does less than the op. Further providers: `torch.compile` of the reference op; the textbook
sort-based sampler (bench_cpu_sampling.sort_based_sample: full sort, softmax, cumsum mask, inverse CDF); on CUDA the
triton backend (kernels/sampling.py: pivot search, no sort) and the cuda backend when the extension has it, each
checked to return the reference op's very tokens. Ends with one JSON line whose ratios are time(torch op) /
time(transformers) per setting (below 1: the op is faster) and, on CUDA, time(sort-based) / time(triton) (the
issue's target: >= 5x on [256, 128k] with top-p).
Run: .venv/bin/python bench/bench_sampling.py [--rows 64] [--vocab 49152] [--reps 5] [--device cpu] [--no-compile]
(defaults on CUDA: --rows 256 --vocab 131072)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu_sampling import sort_based_sample  # noqa: E402
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
    parser.add_argument("--rows", type=int, default=None, help="default 64 on CPU, 256 on CUDA")
    parser.add_argument("--vocab", type=int, default=None, help="default 49152 on CPU, 131072 on CUDA")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider")
    parser.add_argument("--scale", type=float, default=3.0, help="std of the random logits (3: peaked like an LM)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    args.rows = args.rows or (256 if on_gpu else 64)
    args.vocab = args.vocab or (131072 if on_gpu else 49152)

    from tao_engine import ops
    from tao_engine.ops.sampling import sample_reference, sampling_uniforms

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab, generator=gen) * args.scale).to(args.device)  # [B, V] fp32
    nbytes = logits.numel() * logits.element_size()
    input_ids = torch.zeros(args.rows, 1, dtype=torch.int64, device=args.device)  # the warpers' unused argument
    seeds = torch.randint(0, 2**62, (args.rows,), generator=gen).to(args.device)
    steps = torch.zeros(args.rows, dtype=torch.int64, device=args.device)
    uniforms = sampling_uniforms(seeds, steps)
    compiled = None if args.no_compile else torch.compile(sample_reference)
    # GPU backends that can run here: triton always on CUDA, cuda when the extension was built with it.
    gpu_backends = [b for b in ("triton", "cuda") if on_gpu and ops.sample.available(b)[0]]

    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    floor = time_call(lambda: torch.amax(logits, dim=-1), reps=args.reps)
    rows.append({"setting": "-", "provider": "read floor (amax)", "ms": floor * 1e3, "GB/s": nbytes / floor / 1e9,
                 "same tokens as torch op": "-"})  # fmt: skip
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
        if temperature > 0:
            providers["sort-based torch"] = lambda t=temperature, k=top_k, p=top_p: sort_based_sample(
                logits, t, k, p, uniforms
            )
        if compiled is not None:
            try:
                compiled(*op_args)  # compiles (graph breaks at the reference's data-dependent branches)
                providers["torch.compile op"] = lambda op_args=op_args: compiled(*op_args)
            except Exception as exc:  # a failed compile is a finding to print, not a reason to lose the other rows
                print(f"torch.compile op skipped for {name}: {type(exc).__name__}: {exc}"[:300])
        reference_tokens = ops.sample(*op_args, backend="torch")[0]
        same: dict[str, bool] = {}
        for backend in gpu_backends:
            providers[backend] = lambda op_args=op_args, backend=backend: ops.sample(*op_args, backend=backend)
            same[backend] = torch.equal(ops.sample(*op_args, backend=backend)[0], reference_tokens)
        times = {}
        for provider, fn in providers.items():
            seconds = time_call(fn, reps=args.reps)
            times[provider] = seconds
            row = {"setting": name, "provider": provider, "ms": seconds * 1e3, "GB/s": nbytes / seconds / 1e9}
            row["same tokens as torch op"] = same.get(provider, "-")
            rows.append(row)
        ratios[f"time torch/transformers {name}"] = times["torch op"] / times["transformers"]
        for backend in gpu_backends:
            if "sort-based torch" in times:
                ratios[f"time sort-based/{backend} {name}"] = times["sort-based torch"] / times[backend]

    print(f"sample [{args.rows}, {args.vocab}] fp32 logits (std {args.scale}) on {args.device}, median of {args.reps}")
    print_table(rows)
    print_json_line("sampling", rows, ratios)


if __name__ == "__main__":
    main()
