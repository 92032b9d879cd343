"""Per-token log-probs of sampled completions under the policy: the forward pass of every RL update.

With `shared_prompt=True` (the default) each prompt is forwarded once for its n completions: a group is packed as
[prompt][completion 1]...[completion n] (`ForwardBatch.for_shared_prompts`), and every completion attends to the one
prompt forward, so its gradients from all n completions meet there. `shared_prompt=False` packs each prompt +
completion as its own sequence, recomputing the prompt n times; both give the same values and gradients.

Only the hidden states that predict a completion token are turned into log-probs, by `ops.linear_logprobs`, which
never builds a [tokens, vocab] tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tao_engine import ops
from tao_engine.forward_batch import ForwardBatch
from tao_engine.rl.batching import group_tokens, pack


@dataclass
class CompletionLogprobs:
    """Rows are completions, group by group (prompt 0's n completions first); columns are completion tokens."""

    logprobs: torch.Tensor  # [B, T] fp32, log p(token | prompt, earlier tokens) / temperature applied; 0 at padding
    mask: torch.Tensor  # [B, T] bool, True at real tokens
    entropy: torch.Tensor | None = None  # [B, T] fp32 entropy of the predicting distribution; 0 at padding

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1)  # [B]


def completion_logprobs(
    model: nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[Sequence[int]]],
    temperature: float = 1.0,
    shared_prompt: bool = True,
    return_entropy: bool = False,
    max_tokens_per_forward: int | None = None,
    gradient_checkpointing: bool = False,
) -> CompletionLogprobs:
    """Log-probs of every completion token; differentiable w.r.t. the model's parameters.

    prompt_ids [P] token lists; completion_ids [P][n_p] token lists (n may differ per prompt; empty completions give
    all-False mask rows). Groups are packed into forwards of at most `max_tokens_per_forward` tokens (None: one
    forward); a group never splits, so a group larger than the budget runs alone.
    """
    _check_inputs(prompt_ids, completion_ids, temperature, max_tokens_per_forward)
    device = model.lm_head.weight.device
    lengths = [len(c) for comps in completion_ids for c in comps]
    b, t = len(lengths), max(lengths, default=0)
    mask = torch.arange(t, device=device)[None, :] < torch.tensor(lengths, device=device, dtype=torch.long)[:, None]
    # Groups with at least one token to score, and their sizes in the forward.
    groups = [g for g, comps in enumerate(completion_ids) if any(comps)]
    sizes = [group_tokens(len(prompt_ids[g]), [len(c) for c in completion_ids[g]], shared_prompt) for g in groups]
    pieces: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    for chunk in pack(sizes, max_tokens_per_forward):
        chunk_groups = [groups[i] for i in chunk]
        ids, batch, rows, targets = _build(
            [prompt_ids[g] for g in chunk_groups], [completion_ids[g] for g in chunk_groups], shared_prompt, device
        )
        extra = {"checkpoint_layers": True} if gradient_checkpointing else {}  # any module works without it
        hidden = model(ids, batch, **extra)  # [N, H]
        # Read after the forward: an FSDP2-sharded model holds its full LM head weight only once its forward ran.
        weight = model.lm_head.weight
        result = ops.linear_logprobs(hidden.index_select(0, rows), weight, targets, temperature, return_entropy)
        logp, ent = result if return_entropy else (result, None)
        pieces.append(logp)
        if ent is not None:
            entropies.append(ent)
    # The pieces list every completion token in row-major (completion, token) order: exactly mask's True cells.
    logprobs = _scatter(pieces, mask)
    entropy = _scatter(entropies, mask) if return_entropy else None
    assert logprobs.shape == (b, t)
    return CompletionLogprobs(logprobs, mask, entropy)


def _check_inputs(prompt_ids, completion_ids, temperature: float, max_tokens_per_forward: int | None) -> None:
    if len(prompt_ids) != len(completion_ids):
        raise ValueError(
            f"completion_logprobs: prompt_ids has {len(prompt_ids)} prompts but completion_ids has "
            f"{len(completion_ids)} groups; give one list of completions per prompt"
        )
    for g, (prompt, comps) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        if len(prompt) == 0:
            raise ValueError(f"completion_logprobs: prompt_ids[{g}] is empty; a prompt needs at least one token")
        if isinstance(comps, (str, bytes)) or (len(comps) and isinstance(comps[0], int)):
            raise ValueError(
                f"completion_logprobs: completion_ids[{g}] must be a list of completions (token lists), got a flat "
                "list; wrap a single completion as [[...]]"
            )
    if not temperature > 0:
        raise ValueError(f"completion_logprobs: temperature must be > 0, got {temperature}")
    if max_tokens_per_forward is not None and max_tokens_per_forward < 1:
        raise ValueError(
            f"completion_logprobs: max_tokens_per_forward must be >= 1 or None, got {max_tokens_per_forward}"
        )


def _build(
    prompts, completions, shared: bool, device: torch.device
) -> tuple[torch.Tensor, ForwardBatch, torch.Tensor, torch.Tensor]:
    """Packed ids [N], the batch, the rows whose hidden state predicts each completion token [M] and those tokens [M].

    The first token of a completion is predicted by the last prompt row, token j > 0 by the row of token j - 1.
    """
    ids: list[int] = []
    rows: list[int] = []
    targets: list[int] = []
    seq_lens: list[int] = []
    prompt_lens: list[int] = []
    comp_lens: list[list[int]] = []
    for prompt, comps in zip(prompts, completions, strict=True):
        live = [list(c) for c in comps if len(c)]
        if shared:
            last_prompt_row = len(ids) + len(prompt) - 1
            ids += prompt
            prompt_lens.append(len(prompt))
            comp_lens.append([len(c) for c in live])
            for c in live:
                rows.append(last_prompt_row)
                rows += range(len(ids), len(ids) + len(c) - 1)
                ids += c
                targets += c
        else:
            for c in live:
                rows += range(len(ids) + len(prompt) - 1, len(ids) + len(prompt) + len(c) - 1)
                ids += prompt
                ids += c
                targets += c
                seq_lens.append(len(prompt) + len(c))
    if shared:
        batch = ForwardBatch.for_shared_prompts(prompt_lens, comp_lens, device)
    else:
        batch = ForwardBatch.for_sequences(seq_lens, device)
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)
    return as_long(ids), batch, as_long(rows), as_long(targets)


def _scatter(pieces: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    # Flat per-token values [M] -> [B, T] with zeros at padding, differentiable w.r.t. the pieces.
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if not pieces:
        return out
    return out.masked_scatter(mask, torch.cat(pieces).float())
