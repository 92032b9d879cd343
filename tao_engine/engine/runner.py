"""Runs one scheduled step through the model over the paged KV cache and returns the logits to sample from."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops
from tao_engine.engine.sequence import ScheduledSeq, SchedulerOutput
from tao_engine.forward_batch import ForwardBatch


class ModelRunner:
    def __init__(self, model: nn.Module, kv_caches: list[tuple[torch.Tensor, torch.Tensor]], block_size: int) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = kv_caches[0][0].device

    def build_batch(self, out: SchedulerOutput) -> tuple[torch.Tensor, ForwardBatch]:
        """Packed input ids [N] and the ForwardBatch of a step (index math in Python lists, one copy per tensor)."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens: list[int] = []
        context_lens: list[int] = []
        for item in out.scheduled:
            table = item.block_table
            ids.extend(item.token_ids)
            span = item.positions
            positions.extend(span)
            slots.extend(table[p // bs] * bs + p % bs for p in span)
            q_lens.append(item.num_new_tokens)
            context_lens.append(item.context_len)
        width = max(len(item.block_table) for item in out.scheduled)
        tables = [item.block_table + [0] * (width - len(item.block_table)) for item in out.scheduled]
        cu = [0]
        for n in q_lens:
            cu.append(cu[-1] + n)
        dev = self.device
        batch = ForwardBatch(
            positions=torch.tensor(positions, dtype=torch.int64, device=dev),
            cu_seqlens_q=torch.tensor(cu, dtype=torch.int32, device=dev),
            max_seqlen_q=max(q_lens),
            is_prefill=out.is_prefill,
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            block_tables=torch.tensor(tables, dtype=torch.int32, device=dev),  # [B, max_blocks], 0-padded
            context_lens=torch.tensor(context_lens, dtype=torch.int32, device=dev),
            max_seqlen_k=max(context_lens),
            has_cached_prefix=out.is_prefill and any(item.start > 0 for item in out.scheduled),
        )
        return torch.tensor(ids, dtype=torch.int64, device=dev), batch

    @torch.inference_mode()
    def run(self, out: SchedulerOutput) -> tuple[list[ScheduledSeq], torch.Tensor]:
        """Forward the step; returns the items that sample and their last-token logits [S, V] (fp32)."""
        if out.cow_pairs:
            src = torch.tensor([s for s, _ in out.cow_pairs], dtype=torch.int64, device=self.device)
            dst = torch.tensor([d for _, d in out.cow_pairs], dtype=torch.int64, device=self.device)
            ops.copy_blocks([k for k, _ in self.kv_caches], [v for _, v in self.kv_caches], src, dst)
        input_ids, batch = self.build_batch(out)
        hidden = self.model(input_ids, batch, self.kv_caches)  # [N, H]
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        end = 0
        for item in out.scheduled:
            end += item.num_new_tokens
            if item.sample:
                rows.append(end - 1)
                sampled.append(item)
        if not rows:
            return sampled, hidden.new_empty((0, 0), dtype=torch.float32)
        # Only the rows that sample go through the LM head: a prefill chunk of 2048 tokens needs one row, not 2048.
        index = torch.tensor(rows, dtype=torch.int64, device=self.device)
        return sampled, self.model.compute_logits(hidden.index_select(0, index)).float()
