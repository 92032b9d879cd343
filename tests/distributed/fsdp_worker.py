"""One rank of the FSDP2 primitives check (tests/distributed/test_fsdp2.py launches two):

    python -m tests.distributed.fsdp_worker --out FILE

On the tiny model, sharded across the ranks: inside `full_weights` rank r runs r + 1 forwards (no collective may
happen there, or the ranks would hang) and the logits equal the unsharded model's; `full_state_dict` gathers the
unsharded state exactly; `shard_like` gives back each rank's shard of it; a training forward and backward gives the
gradient of the sum of the ranks' losses. Rank r writes its findings as JSON to FILE.<r>.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tao_engine import ops
from tao_engine.distributed import DistributedContext, DistributedSection, destroy_process_group, init_process_group
from tao_engine.distributed.fsdp import full_state_dict, full_weights, shard_like, shard_model
from tao_engine.forward_batch import ForwardBatch
from tests.distributed import tao_setup

SEQUENCES = [[3, 14, 15, 92, 65, 35], [89, 79, 32, 38, 46, 26, 43], [5, 6, 7]]


def nll(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    tokens = torch.tensor(ids)
    hidden = model(tokens, ForwardBatch.for_sequences([len(ids)], torch.device("cpu")))
    return -ops.linear_logprobs(hidden[:-1], model.lm_head.weight, tokens[1:], 1.0).sum()


def logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    tokens = torch.tensor(ids)
    return model.compute_logits(model(tokens, ForwardBatch.for_sequences([len(ids)], torch.device("cpu"))))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ctx = DistributedContext.from_env(DistributedSection(strategy="fsdp2", backend="gloo", timeout_s=120))
    assert ctx is not None, "launch with torchrun"
    init_process_group(ctx)
    try:
        Path(f"{args.out}.{ctx.rank}").write_text(json.dumps(check(ctx)))  # models freed before the group goes
    finally:
        destroy_process_group()
    return 0


def check(ctx: DistributedContext) -> dict[str, object]:
    whole = tao_setup.model()
    sharded = shard_model(tao_setup.model(), ctx)
    found: dict[str, object] = {}
    local = [p.to_local().numel() for p in sharded.parameters()]
    found["holds_a_shard"] = sum(local) < sum(p.numel() for p in whole.parameters())

    with torch.no_grad(), full_weights(sharded, ctx, "test"):
        diffs = [float((logits(sharded, SEQUENCES[i % 3]) - logits(whole, SEQUENCES[i % 3])).abs().max())
                 for i in range(ctx.rank + 1)]  # a different number of forwards on every rank
    found["gathered_forwards"] = len(diffs)
    found["gathered_logits_max_diff"] = max(diffs)

    full = full_state_dict(sharded, ctx)
    if ctx.is_main:
        expected = whole.state_dict()
        found["state_keys_equal"] = sorted(full) == sorted(expected)
        found["state_max_diff"] = max(float((full[k] - expected[k]).abs().max()) for k in expected)
        found["state_on_cpu"] = all(t.device.type == "cpu" and not hasattr(t, "placements") for t in full.values())
    else:
        found["state_empty_off_rank_0"] = full == {}
    placed = {name: shard_like(t, whole.state_dict()[name]) for name, t in sharded.state_dict().items()}
    found["shard_like_equal"] = all(torch.equal(placed[n].to_local(), t.to_local())
                                    for n, t in sharded.state_dict().items())

    loss = nll(sharded, SEQUENCES[ctx.rank])
    loss.backward()
    grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters()}
    total = sum(nll(whole, SEQUENCES[r]) for r in range(ctx.world_size))
    total.backward()
    found["grad_max_diff"] = max(float((grads[n] - p.grad).abs().max()) for n, p in whole.named_parameters())
    found["grad_max_abs"] = max(float(p.grad.abs().max()) for p in whole.parameters())
    return found


if __name__ == "__main__":
    raise SystemExit(main())
