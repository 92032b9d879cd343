"""Attention over groups that share a prompt: [prompt][completion 1]...[completion n], packed (training only).

q [N, Hq, D], k/v [N, Hkv, D] with Hq a multiple of Hkv (GQA). Sequence i owns rows cu_seqlens[i]:cu_seqlens[i+1];
prompt_seq[i] is the index of the prompt sequence it shares (i itself for a prompt). A prompt attends causally to
itself; a completion attends to every row of its prompt, then causally to its own rows, never to its siblings.
The completions of a group follow their prompt directly (the layout of `ForwardBatch.for_shared_prompts`).

The reference computes the prompts with `varlen_causal_attention`, then the completions in one SDPA call, laid out
by completion (each over its prompt's rows and its own: no score between siblings, each prompt's K/V gathered once
per completion) while that gathers at most twice the rows of the group layout, else by group (all completions of a
group as one block of queries over the group's rows with a mask: each prompt's K/V read once per group, so the
saved activations do not grow with n; the layout long prompts take).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tao_engine.ops.attention import varlen_causal_attention
from tao_engine.ops.registry import define_op


def _ranges(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenation of arange(start, start + length) for each pair, without a Python loop. [sum(lengths)] int64"""
    total = int(lengths.sum())
    offsets = torch.cumsum(lengths, 0) - lengths  # where each range begins in the output
    return torch.arange(total, device=starts.device) + torch.repeat_interleave(starts - offsets, lengths)


def _check_layout(bounds: list[int], owners: list[int]) -> list[int]:
    """Validate the group layout; returns the index of every prompt sequence."""
    prompts: list[int] = []
    for i, owner in enumerate(owners):
        if owner == i:
            prompts.append(i)
            if bounds[i + 1] == bounds[i] and i + 1 < len(owners) and owners[i + 1] == i:
                raise ValueError(f"shared_prefix_attention: prompt sequence {i} is empty but has completions")
        elif not prompts or owner != prompts[-1]:
            raise ValueError(
                f"shared_prefix_attention: sequence {i} names prompt sequence {owner}, but a completion must follow "
                "its own prompt directly (layout [prompt][completion]...; see ForwardBatch.for_shared_prompts)"
            )
    return prompts


def shared_prefix_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    prompt_seq: torch.Tensor,
    max_seqlen: int,
    scale: float,
) -> torch.Tensor:
    bounds = cu_seqlens.tolist()
    owners = prompt_seq.tolist()
    if len(owners) != len(bounds) - 1:
        raise ValueError(
            f"shared_prefix_attention: prompt_seq has {len(owners)} entries for {len(bounds) - 1} sequences"
        )
    prompts = _check_layout(bounds, owners)
    if len(prompts) == len(owners):  # no completion at all: plain causal attention
        return varlen_causal_attention(q, k, v, cu_seqlens, max_seqlen, scale)
    device = q.device
    num_seqs = len(owners)
    # Per group g: rows [group_start, comp_start) are the prompt, [comp_start, group_end) its completions.
    ends = prompts[1:] + [num_seqs]
    group_start = torch.tensor([bounds[p] for p in prompts], device=device)
    comp_start = torch.tensor([bounds[p + 1] for p in prompts], device=device)
    group_end = torch.tensor([bounds[e] for e in ends], device=device)
    prompt_lens, comp_lens = comp_start - group_start, group_end - comp_start  # [G] each

    prompt_rows = _ranges(group_start, prompt_lens)  # [Np]
    cu_prompt = torch.zeros(len(prompts) + 1, dtype=torch.int32, device=device)
    torch.cumsum(prompt_lens, 0, out=cu_prompt[1:])
    max_prompt = max(bounds[p + 1] - bounds[p] for p in prompts)
    out_prompt = varlen_causal_attention(
        q[prompt_rows], k[prompt_rows], v[prompt_rows], cu_prompt, max_prompt, scale
    )  # [Np, Hq, D]

    # Completions' queries: by group (one block of a group's completion rows over all its rows, a mask keeping each
    # completion to its prompt and its own causal part) or by completion (each over its prompt and itself only).
    # By completion skips the masked sibling blocks (for n completions of length C after a prompt of P, it computes
    # C (P + C) scores per completion instead of C (P + nC)) but gathers each prompt's K/V once per completion, so
    # it is taken while that holds at most twice the rows (short prompts); long prompts keep the group layout.
    comp_seqs = [i for i, owner in enumerate(owners) if owner != i]
    per_completion_rows = sum(bounds[owners[j] + 1] - bounds[owners[j]] + bounds[j + 1] - bounds[j] for j in comp_seqs)
    per_group_rows = sum(bounds[e] - bounds[p] for p, e in zip(prompts, ends, strict=True))
    if per_completion_rows <= 2 * per_group_rows:
        seq_start = torch.tensor(bounds[:-1], device=device)
        seq_len = torch.tensor(bounds, device=device).diff()
        comp_index = torch.tensor(comp_seqs, device=device)
        owner_of = torch.tensor(owners, device=device)
        out_comp = _by_completion(q, k, v, seq_start[comp_index], seq_len[comp_index],
                                  seq_start[owner_of[comp_index]], seq_len[owner_of[comp_index]], scale)
    else:
        out_comp = _by_group(q, k, v, bounds, prompts, ends, group_start, comp_start, group_end, scale)

    comp_rows = _ranges(comp_start, comp_lens)  # [Nc]
    order = torch.cat([prompt_rows, comp_rows])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    return torch.cat([out_prompt, out_comp]).index_select(0, inverse)


def _by_group(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: list[int], prompts: list[int], ends: list[int],
    group_start: torch.Tensor, comp_start: torch.Tensor, group_end: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    """All completions of a group as one block of queries [Cmax] over the group's rows [Kmax], masked; every group
    batched in one SDPA call. -> [Nc, Hq, D], completion rows in order."""
    device = q.device
    num_seqs = len(bounds) - 1
    c_max = max(bounds[e] - bounds[p + 1] for p, e in zip(prompts, ends, strict=True))
    k_max = max(bounds[e] - bounds[p] for p, e in zip(prompts, ends, strict=True))
    q_rows = comp_start[:, None] + torch.arange(c_max, device=device)  # [G, Cmax]
    q_valid = q_rows < group_end[:, None]
    k_rows = group_start[:, None] + torch.arange(k_max, device=device)  # [G, Kmax]
    k_valid = k_rows < group_end[:, None]
    q_rows, k_rows = q_rows.where(q_valid, 0), k_rows.where(k_valid, 0)  # padding reads row 0, masked below
    seq_of_row = torch.repeat_interleave(
        torch.arange(num_seqs, device=device), torch.tensor(bounds, device=device).diff()
    )  # [N]
    same_completion = seq_of_row[q_rows][:, :, None] == seq_of_row[k_rows][:, None, :]  # [G, Cmax, Kmax]
    causal = k_rows[:, None, :] <= q_rows[:, :, None]
    in_prompt = (k_rows < comp_start[:, None])[:, None, :]
    # Padded queries see the prompt (never empty), so no row is fully masked and no NaN reaches the backward.
    mask = k_valid[:, None, :] & (in_prompt | (same_completion & causal))  # [G, Cmax, Kmax]
    if c_max == 0:  # every completion is empty
        return q.new_empty(0, q.shape[1], q.shape[2])
    qg = q[q_rows].transpose(1, 2)  # [G, Hq, Cmax, D]
    kg, vg = k[k_rows].transpose(1, 2), v[k_rows].transpose(1, 2)  # [G, Hkv, Kmax, D]
    out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask[:, None], scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2)[q_valid]  # [Nc, Hq, D]


def _by_completion(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, comp_start: torch.Tensor, comp_len: torch.Tensor,
    prompt_start: torch.Tensor, prompt_len: torch.Tensor, scale: float,
) -> torch.Tensor:  # fmt: skip
    """Each completion j (its rows comp_start[j] + [0, comp_len[j])) as queries [Cmax] over its prompt's rows
    [Pmax] then its own [Cmax], the prompt part unmasked and the own part causal; all in one SDPA call.
    -> [Nc, Hq, D], completion rows in order."""
    device = q.device
    c_max = int(comp_len.max()) if comp_len.numel() else 0
    if c_max == 0:
        return q.new_empty(0, q.shape[1], q.shape[2])
    p_max = int(prompt_len.max())
    steps_c, steps_p = torch.arange(c_max, device=device), torch.arange(p_max, device=device)
    q_valid = steps_c[None, :] < comp_len[:, None]  # [J, Cmax]
    p_valid = steps_p[None, :] < prompt_len[:, None]  # [J, Pmax]
    q_rows = (comp_start[:, None] + steps_c).where(q_valid, 0)  # padding reads row 0, masked below
    k_rows = torch.cat([(prompt_start[:, None] + steps_p).where(p_valid, 0), q_rows], dim=1)  # [J, Pmax + Cmax]
    causal = steps_c[None, :] <= steps_c[:, None]  # [Cmax, Cmax]: own key s visible from query t when s <= t
    own = causal[None] & q_valid[:, None, :]  # [J, Cmax, Cmax]
    # Padded queries (t >= comp_len) still see their prompt: no row is fully masked, no NaN reaches the backward.
    mask = torch.cat([p_valid[:, None, :].expand(-1, c_max, -1), own], dim=2)  # [J, Cmax, Pmax + Cmax]
    qg = q[q_rows].transpose(1, 2)  # [J, Hq, Cmax, D]
    kg, vg = k[k_rows].transpose(1, 2), v[k_rows].transpose(1, 2)  # [J, Hkv, Pmax + Cmax, D]
    out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask[:, None], scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2)[q_valid]  # [Nc, Hq, D]


shared_prefix_attention = define_op("shared_prefix_attention", shared_prefix_attention_reference)
