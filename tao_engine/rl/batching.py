"""How a rollout batch is cut for the update: whole groups into minibatches (one optimizer step each), and each
minibatch into micro-batches that fit a token budget (one forward + backward each, gradients accumulated).

A group never splits: with the shared-prompt forward its n completions attend to one prompt forward. Micro-batch
losses are weighted by `Minibatch.share`, so the accumulated gradient equals the gradient of the whole minibatch's
loss under its aggregation mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Minibatch:
    groups: list[int]  # prompt indices, in training order
    micro_batches: list[list[int]]  # a partition of `groups`
    num_tokens: int  # completion tokens in the minibatch
    num_sequences: int  # completions with at least one token

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def share(self, micro: Sequence[int], mask: torch.Tensor, loss_agg: str) -> float:
        """The weight of a micro-batch's loss (a mean over its own tokens or sequences) in the minibatch's loss."""
        if loss_agg == "token_mean":
            return float(mask.sum()) / max(1, self.num_tokens)
        return float((mask.sum(dim=1) > 0).sum()) / max(1, self.num_sequences)


@dataclass(frozen=True)
class MinibatchPlan:
    groups: list[int]
    num_minibatches: int
    max_tokens: int
    seed: int
    group_tokens: dict[int, int]  # forward tokens of each group
    completion_tokens: dict[int, list[int]]

    def epoch(self, epoch: int) -> list[Minibatch]:
        """The minibatches of one pass; groups are shuffled per epoch (seeded) when there are several minibatches."""
        order = list(self.groups)
        if not order:
            return []  # nothing carries a signal (e.g. every group zero-variance under DAPO): no update
        if self.num_minibatches > 1:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = [order[i] for i in torch.randperm(len(order), generator=gen).tolist()]
        count = min(self.num_minibatches, len(order))
        size = -(-len(order) // count)
        out = []
        for start in range(0, len(order), size):
            groups = order[start : start + size]
            lengths = [n for g in groups for n in self.completion_tokens[g]]
            out.append(
                Minibatch(
                    groups=groups,
                    micro_batches=_pack(groups, self.group_tokens, self.max_tokens),
                    num_tokens=sum(lengths),
                    num_sequences=sum(1 for n in lengths if n > 0),
                )
            )
        return out


def plan_minibatches(
    rollouts: Any, keep: torch.Tensor, num_minibatches: int, max_tokens: int, seed: int = 0, shared_prompt: bool = True
) -> MinibatchPlan:
    """keep [P] bool: the groups to train on (others are dropped, e.g. zero-variance groups under DAPO)."""
    groups = [g for g in range(len(rollouts.completion_token_ids)) if bool(keep[g])]
    completion_tokens = {g: [len(c) for c in rollouts.completion_token_ids[g]] for g in groups}
    group_tokens = {}
    for g in groups:
        prompt = len(rollouts.prompt_token_ids[g])
        comps = completion_tokens[g]
        group_tokens[g] = prompt + sum(comps) if shared_prompt else sum(prompt + c for c in comps)
    return MinibatchPlan(groups, num_minibatches, max_tokens, seed, group_tokens, completion_tokens)


def _pack(groups: list[int], tokens: dict[int, int], budget: int) -> list[list[int]]:
    # Greedy in order: a group that alone exceeds the budget still runs, alone.
    out: list[list[int]] = []
    used = 0
    for g in groups:
        if out and used + tokens[g] <= budget:
            out[-1].append(g)
            used += tokens[g]
        else:
            out.append([g])
            used = tokens[g]
    return out
