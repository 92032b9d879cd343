"""One rank of a distributed TAO run on the tiny model (launched by torchrun or tests/distributed/launch.py):

    python -m tests.distributed.tao_worker --run-dir DIR [--steps 2] [--algorithm grpo] [--fail-rank 1]
        [--max-tokens-per-forward 64] [--rare-reward] [--rank-dirs] [--result FILE] [--strategy fsdp2] [--lora]
        [--kl-coef 0.05] [--resume] [--backend nccl --device cuda]

--rank-dirs: rank r writes under DIR/rank<r> (to show that only rank 0 writes anything). --result: rank r writes
its reduced metrics history as JSON to FILE.<r>.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tao_engine.distributed import DistributedContext, destroy_process_group, init_process_group
from tao_engine.rl.tao import TAO
from tests.distributed import tao_setup


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--algorithm", default="grpo")
    parser.add_argument("--max-tokens-per-forward", type=int, default=64)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--rare-reward", action="store_true")
    parser.add_argument("--rank-dirs", action="store_true")
    parser.add_argument("--result", default=None)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--kl-coef", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    def config(run_dir):
        return tao_setup.config(run_dir, args.steps, args.algorithm, args.max_tokens_per_forward, args.strategy,
                                args.lora, args.kl_coef, args.backend, args.device)

    cfg = config(args.run_dir)
    ctx = DistributedContext.from_env(cfg.distributed)
    assert ctx is not None, "launch with torchrun (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT)"
    if args.rank_dirs:
        cfg = config(Path(args.run_dir) / f"rank{ctx.rank}")
    init_process_group(ctx)
    try:
        _run(args, cfg, ctx)  # the TAO object (and any FSDP2 state) is gone before the group is destroyed
    finally:
        destroy_process_group()
    return 0


def _run(args: argparse.Namespace, cfg, ctx: DistributedContext) -> None:
    scorer = tao_setup.scorer(fail=args.fail_rank == ctx.rank, rare=args.rare_reward)
    tao = TAO(cfg, model=tao_setup.model(args.device), scorer=scorer, progress=False, distributed=ctx)
    result = tao.run(prompts=tao_setup.PROMPTS, resume=args.resume)
    if args.result:
        Path(f"{args.result}.{ctx.rank}").write_text(json.dumps(result.history))


if __name__ == "__main__":
    raise SystemExit(main())
