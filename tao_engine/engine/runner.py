"""Runs one scheduled step through the model over the paged KV cache and returns the logits to sample from."""

from __future__ import annotations

import torch
from torch import nn

from tao_engine import ops
from tao_engine.engine.sequence import ScheduledSeq, SchedulerOutput
from tao_engine.engine.step_buffers import StepBuffers
from tao_engine.forward_batch import ForwardBatch
from tao_engine.models.packed_weights import PackedDecoderWeights


class ModelRunner:
    def __init__(
        self,
        model: nn.Module,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
        block_size: int,
        compile_decode: bool = False,
        packed: PackedDecoderWeights | None = None,
    ) -> None:
        self.model = model
        self.packed = packed  # the engine's packed copy of the linear weights, or None: the modules' own
        # One inductor graph for every decode batch size (dynamic), over the same module and parameters: an update by
        # the trainer reaches it with no recompile. The custom ops trace through their fake kernels.
        self.decode_model = torch.compile(model, dynamic=True) if compile_decode else model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.device = kv_caches[0][0].device
        self.buffers = StepBuffers(self.device)

    def build_batch(self, out: SchedulerOutput) -> tuple[torch.Tensor, ForwardBatch]:
        """Packed input ids [N] and the ForwardBatch of a step: index math in Python lists, written into the step
        buffers (one slice per tensor, no fresh allocation)."""
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        q_lens: list[int] = []
        context_lens: list[int] = []
        cu = [0]
        for item in out.scheduled:
            table = item.block_table
            ids.extend(item.token_ids)
            span = item.positions
            positions.extend(span)
            slots.extend(table[p // bs] * bs + p % bs for p in span)
            q_lens.append(item.num_new_tokens)
            context_lens.append(item.context_len)
            cu.append(cu[-1] + item.num_new_tokens)
        buffers = self.buffers
        batch = ForwardBatch(
            positions=buffers.vector("positions", positions, torch.int64),
            cu_seqlens_q=buffers.vector("cu_seqlens_q", cu, torch.int32),
            max_seqlen_q=max(q_lens),
            is_prefill=out.is_prefill,
            slot_mapping=buffers.vector("slot_mapping", slots, torch.int64),
            # [B, max_blocks], 0-padded
            block_tables=buffers.table("block_tables", [item.block_table for item in out.scheduled], torch.int32),
            context_lens=buffers.vector("context_lens", context_lens, torch.int32),
            max_seqlen_k=max(context_lens),
            has_cached_prefix=out.is_prefill and any(item.start > 0 for item in out.scheduled),
        )
        return buffers.vector("input_ids", ids, torch.int64), batch

    @torch.inference_mode()
    def run(self, out: SchedulerOutput) -> tuple[list[ScheduledSeq], torch.Tensor]:
        """Forward the step; returns the items that sample and their last-token logits [S, V] in the model's dtype
        (the sampler reads bf16 logits as they are: no [S, V] fp32 copy per step)."""
        if out.cow_pairs:
            src = torch.tensor([s for s, _ in out.cow_pairs], dtype=torch.int64, device=self.device)
            dst = torch.tensor([d for _, d in out.cow_pairs], dtype=torch.int64, device=self.device)
            ops.copy_blocks([k for k, _ in self.kv_caches], [v for _, v in self.kv_caches], src, dst)
        input_ids, batch = self.build_batch(out)
        forward = self.model
        if not out.is_prefill and self.decode_model is not self.model:
            forward = self.decode_model
            _mark_batch_dynamic(input_ids, batch)
        packed = self.packed if self.packed is not None and self.packed.active else None
        head = None
        if packed is not None:
            packed.refresh()  # a weight written in place since the last step is packed again first
            head = packed.head
        if packed is None or out.is_prefill:  # prefill GEMMs have rows enough to amortize oneDNN's reorder
            hidden = forward(input_ids, batch, self.kv_caches)  # [N, H]
        else:
            hidden = forward(input_ids, batch, self.kv_caches, linears=packed.layers)
        rows: list[int] = []
        sampled: list[ScheduledSeq] = []
        end = 0
        for item in out.scheduled:
            end += item.num_new_tokens
            if item.sample:
                rows.append(end - 1)
                sampled.append(item)
        if not rows:
            return sampled, hidden.new_empty((0, 0))
        # Only the rows that sample go through the LM head: a prefill chunk of 2048 tokens needs one row, not 2048.
        if len(rows) == hidden.shape[0]:  # a decode step: every token samples
            return sampled, self.model.compute_logits(hidden, head)
        index = self.buffers.vector("sample_rows", rows, torch.int64)
        return sampled, self.model.compute_logits(hidden.index_select(0, index), head)

    def sync_weights(self) -> None:
        """Re-read the model's projections for the packed copy (modules and tensors may have been replaced, not only
        written: a load, an adapter wrapped around a projection)."""
        if self.packed is not None:
            with torch.inference_mode():
                self.packed.sync()


def _mark_batch_dynamic(input_ids: torch.Tensor, batch: ForwardBatch) -> None:
    """Batch size and block-table width vary from step to step: compile one graph for all of them up front instead of
    recompiling at the first two sizes it sees (maybe_: a size of 1 stays specialized rather than failing)."""
    from torch._dynamo import maybe_mark_dynamic

    for t in (input_ids, batch.positions, batch.slot_mapping, batch.context_lens, batch.cu_seqlens_q):
        maybe_mark_dynamic(t, 0)
    maybe_mark_dynamic(batch.block_tables, 0)
    maybe_mark_dynamic(batch.block_tables, 1)
