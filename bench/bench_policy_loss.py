"""policy_loss, forward + backward (GRPO options: token ratio, clip 0.2 / 0.28, k3 KL to a reference at 0.04,
seq_mean_token_mean), every provider of the op in one run: torch reference (naive autograd), torch.compile of it,
triton and cuda on a GPU, cpp on the CPU.

1. Time of forward + backward on log-probs [B, T] (64 x 1024 on the CPU, 256 x 2048 on a GPU). GB/s counts the least
   traffic any implementation has: log-probs, old and reference log-probs, mask and advantages read, per-token loss
   and gradient written (25 bytes per token).
2. Memory of the backward, per token, at N and 4N tokens: bytes autograd keeps for the backward (saved tensors, the
   inputs left out) and, on a GPU, the peak allocated during forward + backward above what was allocated before (it
   includes the 8 bytes/token of outputs). Equal figures at N and 4N mean O(N) extra memory, issue 5's goal.
3. On a GPU, the loss from logits [B, T+1, V] (16 x 1024 x 49152, bf16): tao (token_logprobs + policy_loss) and the
   torch reference beside Liger-Kernel's Triton GRPO loss (`liger_kernel.transformers.grpo_loss.triton_grpo_loss`,
   imported only there; skipped with a note when it is not installed), DAPO-style token-mean aggregation for all.
Ends with one JSON line (bench/common.py). Run: .venv/bin/python bench/bench_policy_loss.py [--device cuda]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402
from op_bench import bench_parser, op_providers, run_providers, speedups  # noqa: E402
from policy_loss_peers import logits_section  # noqa: E402

OPTIONS = dict(clip_low=0.2, clip_high=0.28, kl_type="k3", kl_coef=0.04, loss_agg="seq_mean_token_mean")
TOLERANCE = 1e-4  # fp32 throughout
BYTES_PER_TOKEN = 4 * 3 + 1 + 4 + 4  # read logprobs, old, ref (fp32) and the mask; write per-token loss and gradient


def make_inputs(batch: int, length: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(batch, length, generator=gen) * 3  # [B, T]
    inputs = {
        "logprobs": logprobs,
        "old_logprobs": logprobs + torch.randn(batch, length, generator=gen) * 0.2,
        "advantages": torch.randn(batch, generator=gen),  # [B]
        "mask": torch.rand(batch, length, generator=gen) < 0.9,  # [B, T] bool
        "ref_logprobs": logprobs + torch.randn(batch, length, generator=gen) * 0.2,
    }
    return {name: t.to(device) for name, t in inputs.items()}


def make_call(fn: Callable[..., Any], inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
    """Forward + backward of `fn` (the op's signature) -> (its output, d loss / d logprobs)."""
    logprobs = inputs["logprobs"].clone().requires_grad_()
    others = {name: t for name, t in inputs.items() if name != "logprobs"}

    def call() -> Any:
        logprobs.grad = None
        out = fn(logprobs, **others, **OPTIONS)
        out.loss.backward()
        return out, logprobs.grad

    return call


def backward_memory(fn: Callable[..., Any], inputs: dict[str, torch.Tensor], device: str) -> tuple[int, int | None]:
    """(bytes saved for the backward, peak bytes allocated above the start on CUDA or None) of one forward+backward."""
    call = make_call(fn, inputs)
    input_storages = {t.untyped_storage().data_ptr() for t in inputs.values()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in input_storages:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = call()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
    del out
    return sum(saved.values()), peak


def memory_rows(providers, batch: int, length: int, device: str) -> tuple[list[dict[str, object]], dict[str, float]]:
    rows: list[dict[str, object]] = []
    ratios: dict[str, float] = {}
    for provider in providers:
        if provider.fn is None or provider.name == "torch.compile":  # eager providers: hooks see what they save
            continue
        per_token, peaks = [], []
        for scale in (1, 4):
            inputs = make_inputs(batch * scale, length, device, seed=1)
            tokens = batch * scale * length
            saved, peak = backward_memory(provider.fn, inputs, device)
            per_token.append(saved / tokens)
            peaks.append(None if peak is None else peak / tokens)
            rows.append({"provider": provider.name, "tokens": tokens, "saved B/token": saved / tokens,
                         "peak extra B/token": peaks[-1]})
        ratios[f"policy_loss saved bytes per token {provider.name}"] = per_token[1]
        # O(N): the per-token figure does not grow with N (within 10%, allocator rounding).
        ratios[f"policy_loss saved bytes per token 4N/N {provider.name}"] = per_token[1] / max(per_token[0], 1e-9)
        if peaks[0]:
            ratios[f"policy_loss peak extra bytes per token {provider.name}"] = peaks[1]
            ratios[f"policy_loss peak extra bytes per token 4N/N {provider.name}"] = peaks[1] / peaks[0]
    return rows, ratios


def print_linear_memory_verdict(ratios: dict[str, float]) -> None:
    """Issue 5's goal, one line per measured figure: the backward's extra memory per token does not grow with N."""
    for key, value in ratios.items():
        if "4N/N" in key:
            verdict = "PASS" if value < 1.1 else "MISS"
            print(f"O(N) extra memory, {key.removeprefix('policy_loss ')}: {value:.2f} (goal < 1.1): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, reps=10)
    parser.add_argument("--batch", type=int, default=None, help="sequences (default 64 on CPU, 256 on CUDA)")
    parser.add_argument("--length", type=int, default=None, help="tokens per sequence (default 1024 / 2048)")
    args = parser.parse_args(argv)
    batch = args.batch or (5 if args.quick else (256 if args.device == "cuda" else 64))
    length = args.length or (37 if args.quick else (2048 if args.device == "cuda" else 1024))
    reps = 2 if args.quick else args.reps

    providers = op_providers("policy_loss", args.device, args.providers)
    inputs = make_inputs(batch, length, args.device)
    expected = make_call(providers[0].fn, inputs)()
    label = {"section": "fwd+bwd", "shape": f"[{batch}, {length}]"}
    rows, passed = run_providers(providers, lambda fn: make_call(fn, inputs), expected, TOLERANCE, args.device, reps,
                                 label, nbytes=BYTES_PER_TOKEN * batch * length)
    ratios = speedups(rows, f"policy_loss [{batch}, {length}]")
    print(f"policy_loss forward + backward on {args.device}, {OPTIONS}, median of {reps}")
    print_table(rows)

    mem_rows, mem_ratios = memory_rows(providers, batch, length, args.device)
    ratios.update(mem_ratios)
    print("\nmemory of forward + backward per token at N and 4N tokens (saved: what autograd keeps for the backward)")
    print_table(mem_rows)
    print_linear_memory_verdict(mem_ratios)

    logit_rows, logit_ratios, logit_ok = logits_section(args, reps)
    ratios.update(logit_ratios)
    passed &= logit_ok
    print("\nthe loss from logits (log-softmax over the vocabulary included): tao and torch beside Liger's GRPO loss")
    print_table(logit_rows)
    print_json_line("policy_loss", rows + [{"section": "memory", **r} for r in mem_rows] + logit_rows, ratios)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
