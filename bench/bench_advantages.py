"""group_advantages: group-relative advantages of P prompts x n samples, every provider of the op in one run (torch
reference, torch.compile of it, triton and cuda on a GPU, cpp on the CPU), for GRPO's `mean_std` and
REINFORCE++'s `mean_batch_std` (a batch-wide statistic), with 2% of rewards missing (NaN) and some constant groups.

Shapes [P, n]: 512 x 8 (a GRPO step) and 8192 x 16. GB/s = bytes of rewards read + advantages and flags written /
time; these calls are tiny, so the times mostly measure launch and dispatch overhead.
Ends with one JSON line (bench/common.py). Run: .venv/bin/python bench/bench_advantages.py [--device cuda]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from op_bench import TOLERANCES, Report, bench_parser, op_providers, run_providers  # noqa: E402

MODES = ("mean_std", "mean_batch_std")


def make_rewards(prompts: int, n: int, device: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(prompts, n, generator=gen)  # [P, n]
    rewards[torch.rand(prompts, n, generator=gen) < 0.02] = float("nan")  # missing rewards
    rewards[:: max(1, prompts // 8)] = 1.0  # constant groups: zero variance
    return rewards.to(device)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, reps=50)
    args = parser.parse_args(argv)
    shapes = ((7, 5),) if args.quick else ((512, 8), (8192, 16))
    reps = 2 if args.quick else args.reps

    providers = op_providers("group_advantages", args.device, args.providers)
    report = Report("group_advantages")
    for prompts, n in shapes:
        rewards = make_rewards(prompts, n, args.device)
        for mode in MODES:

            def make(fn, rewards=rewards, mode=mode):
                return lambda: fn(rewards, mode, 1e-6)

            expected = make(providers[0].fn)()
            nbytes = prompts * n * (4 + 4) + prompts  # rewards read, advantages and flags written
            label = {"shape": f"[{prompts}, {n}]", "mode": mode}
            section, ok = run_providers(providers, make, expected, TOLERANCES[torch.float32], args.device, reps,
                                        label, nbytes=nbytes)
            report.add(section, ok, f"group_advantages [{prompts}, {n}] {mode}")
    return report.finish(f"group_advantages on {args.device}, fp32 rewards, median of {reps}")


if __name__ == "__main__":
    sys.exit(main())
