"""How a rollout batch is cut for the update: whole groups into minibatches (one optimizer step each), and each
minibatch into micro-batches that fit a token budget (one forward + backward each, gradients accumulated).

A group never splits: with the shared-prompt forward its n completions attend to one prompt forward. `pack` is the
one greedy token-budget packer (micro-batches here, forwards in `completion_logprobs`). Micro-batch losses are
weighted by `Minibatch.share`, so the accumulated gradient equals the gradient of the whole minibatch's
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
                    micro_batches=[[groups[i] for i in chunk]
                                   for chunk in pack([self.group_tokens[g] for g in groups], self.max_tokens)],
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
    sizes = {g: group_tokens(len(rollouts.prompt_token_ids[g]), completion_tokens[g], shared_prompt) for g in groups}
    return MinibatchPlan(groups, num_minibatches, max_tokens, seed, sizes, completion_tokens)


def group_tokens(prompt_len: int, completion_lens: Sequence[int], shared_prompt: bool) -> int:
    """Tokens a group puts through the forward: its prompt once (shared) or once per completion, and its completions;
    an empty completion is not forwarded."""
    live = [n for n in completion_lens if n]
    return prompt_len + sum(live) if shared_prompt else prompt_len * len(live) + sum(live)


def pack(sizes: Sequence[int], budget: int | None) -> list[list[int]]:
    """Consecutive items (indices into `sizes`) per chunk, greedily in order, each chunk within `budget` tokens (None:
    no limit); an item that alone exceeds the budget still runs, alone."""
    chunks: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        if chunks and (budget is None or used + size <= budget):
            chunks[-1].append(i)
            used += size
        else:
            chunks.append([i])
            used = size
    return chunks
