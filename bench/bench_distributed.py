"""Data-parallel TAO step time on CPU: 1 rank vs 2 ranks (gloo) on the same global batch, with replicated weights
(ddp) and with FSDP2-sharded weights (issue 10).

Each row is one `torchrun --standalone --nproc-per-node K` launch of this script's worker, which runs --steps TAO
steps on a small random Llama (built in every rank from the same seed; rank 0's weights are broadcast anyway) with a
toy label-free reward, and prompts_per_step = --prompts split across the ranks. Reported: the median step time
(after one warm-up step) and its phases as the run's metrics give them (rollout+score and update, each the slowest
rank's), the step's completion tokens per second, the largest rank's peak memory, and the speed-up over 1 rank.
Every rank is pinned to OMP_NUM_THREADS=--threads, so on a 2-core machine 2 ranks use 2 cores where 1 rank uses one.
The fsdp2 row pays one all-gather of the weights per rollout and one all-gather + reduce-scatter per layer per
micro-step for holding half of the training state per rank (on CPU, peak RSS is dominated by torch itself at this
model size: the memory column shows the process, not the shards).

Run: .venv/bin/python bench/bench_distributed.py [--steps 4] [--prompts 8] [--samples 4] [--max-tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = dict(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=1024)


class _LowTokens:
    """Toy label-free reward: the fraction of a candidate's tokens in the lower half of the vocabulary."""

    name = "low_tokens"

    def score_groups(self, prompts, groups, completion_token_ids=None, **context):
        half = MODEL["vocab_size"] // 2
        return [[sum(t < half for t in c) / max(1, len(c)) for c in g] for g in completion_token_ids]


def _worker(args: argparse.Namespace) -> None:
    import torch

    from tao_engine.distributed import (
        DistributedContext,
        DistributedSection,
        destroy_process_group,
        init_process_group,
    )
    from tao_engine.engine import EngineConfig, SamplingParams
    from tao_engine.models import ModelConfig, build_model
    from tao_engine.rl.optim import OptimConfig
    from tao_engine.rl.tao import TAO
    from tao_engine.rl.tao_config import DataSection, RunSection, TAOConfig
    from tao_engine.scoring.composite import CompositeScorer, WeightedScorer

    config = TAOConfig(
        sampling=SamplingParams(n=args.samples, temperature=1.0, max_tokens=args.max_tokens, ignore_eos=True),
        optim=OptimConfig(lr=1e-4),
        engine=EngineConfig(kv_cache_bytes=64 * 2**20, block_size=16),
        run=RunSection(steps=args.steps, output_dir=args.run_dir, seed=0),
        data=DataSection(prompts_per_step=args.prompts),
        distributed=DistributedSection(strategy=args.strategy),
    )
    ctx = DistributedContext.from_env(config.distributed)

    def run() -> list[dict[str, Any]]:  # the TAO object is gone before the process group is destroyed
        torch.manual_seed(0)
        model = build_model(ModelConfig(architectures=["LlamaForCausalLM"], model_type="llama", eos_token_id=0,
                                        **MODEL)).train()
        gen = torch.Generator().manual_seed(1)
        prompts = [torch.randint(1, MODEL["vocab_size"], (16,), generator=gen).tolist() for _ in range(64)]
        tao = TAO(config, model=model, scorer=CompositeScorer([WeightedScorer(_LowTokens())]), progress=False,
                  distributed=ctx)
        return tao.run(prompts=prompts).history

    init_process_group(ctx)
    try:
        history = run()
        if ctx.is_main:
            print("RESULT " + json.dumps(history))
    finally:
        destroy_process_group()


def _launch(args: argparse.Namespace, ranks: int, strategy: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
               __file__, "--worker", "--run-dir", str(Path(tmp) / "run"), "--steps", str(args.steps),
               "--prompts", str(args.prompts), "--samples", str(args.samples), "--max-tokens", str(args.max_tokens),
               "--strategy", strategy]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench_distributed: {ranks} rank(s) failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    history = json.loads(lines[-1].removeprefix("RESULT "))
    timed = history[1:] or history  # the first step warms up

    def median(key: str) -> float:
        return statistics.median(r[key] for r in timed)

    step_s = statistics.median(r["rollout_score_s"] + r["train_s"] for r in timed)
    return {
        "ranks": ranks,
        "strategy": strategy,
        "prompts/step": args.prompts,
        "step_s": step_s,
        "rollout_score_s": median("rollout_score_s"),
        "train_s": median("train_s"),
        "completion_tok/s": median("generated_tokens") / step_s,
        "reward_first": history[0]["reward_mean"],
        "peak_memory_mb": max(r["peak_memory_mb"] for r in history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4, help="candidates per prompt (sampling.n)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every rank")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    rows = [_launch(args, ranks, strategy) for ranks, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp2"))]
    for row in rows:
        row["speedup"] = rows[0]["step_s"] / row["step_s"]
    print_table(rows)
    print_json_line("bench_distributed", rows, {"2_ranks_vs_1_rank_step": rows[1]["speedup"],
                                                "2_fsdp2_ranks_vs_1_rank_step": rows[2]["speedup"]})


if __name__ == "__main__":
    main()
