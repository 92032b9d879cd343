"""The sampler: per-sequence logits processing (min_tokens blocking, penalties), then the batched `sample` op.

Row b of `logits` belongs to one running sequence with its own `SamplingParams`, seed and step. Processing order:
1. min_tokens: while fewer than `min_tokens` tokens have been generated, the EOS ids (unless `ignore_eos`) and the
   row's `stop_token_ids` get logit -inf, so they cannot be drawn.
2. penalties, as vLLM defines them, on the logits before temperature:
   - repetition_penalty r, for every token seen in the prompt or the output: logit / r if positive, logit * r if not;
   - frequency_penalty f and presence_penalty p, over OUTPUT tokens only: logit -= f * count + p * (count > 0).
3. `ops.sample`: temperature, top-k, top-p, min-p, seeded draw (see tao_engine/ops/sampling.py).
`logprobs` are under the distribution the token was drawn from (all of the above applied); `raw_logprobs` are
log_softmax of the untouched logits at temperature 1.

Penalty tensors are built with one scatter_add from the rows' id lists, and all of step 2 is skipped when no row
uses a penalty (the common case); step 1 touches only the rows still under their min_tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from tao_engine import ops
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.engine.step_buffers import StepBuffers


@dataclass(frozen=True)
class SamplerOutput:
    tokens: torch.Tensor  # [B] int64
    logprobs: torch.Tensor  # [B] fp32, under the processed, filtered distribution the token was drawn from
    raw_logprobs: torch.Tensor  # [B] fp32, log_softmax(raw logits)[token]


class Sampler:
    """Samples one token per row. `eos_token_ids`: the model's end-of-sequence ids, blocked under min_tokens.

    `backend` is passed to `ops.sample` (None: automatic resolution).
    """

    def __init__(self, eos_token_ids: Iterable[int] = (), backend: str | None = None) -> None:
        self.eos_token_ids = tuple(int(i) for i in eos_token_ids)
        self.backend = backend
        self._buffers: StepBuffers | None = None  # the per-row parameter tensors, reused step after step

    def __call__(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        seeds: Sequence[int],
        output_ids: Sequence[Sequence[int]],
        prompt_ids: Sequence[Sequence[int]] | None = None,
        steps: Sequence[int] | None = None,
    ) -> SamplerOutput:
        """logits [B, V] (any float dtype); per row: params, seed (signed int64, see `sample_seed`), the tokens
        generated so far and (needed only when a row has repetition_penalty != 1) the prompt's tokens. `steps`
        defaults to len(output_ids[b]): the index of the token being drawn."""
        rows, vocab = _check_call(logits, params, seeds, output_ids, prompt_ids, steps)
        # The logits stay in their dtype (the kernels read bf16 exactly); only a row that must be processed makes the
        # batch take a copy, and penalty arithmetic runs in fp32.
        raw = logits
        processed = _block_under_min_tokens(raw, params, output_ids, self.eos_token_ids)
        if any(p.uses_penalties for p in params):
            owned = processed if processed is not raw and processed.dtype == torch.float32 else processed.float()
            processed = _apply_penalties(owned if owned is not raw else raw.clone(), params, output_ids, prompt_ids)
        if steps is None:
            steps = [len(ids) for ids in output_ids]
        buffers = self._buffers_on(logits.device)
        tokens, logprobs, raw_logprobs = ops.sample(
            processed,
            buffers.vector("temperature", [p.temperature for p in params], torch.float32),
            buffers.vector("top_k", [p.top_k for p in params], torch.int64),
            buffers.vector("top_p", [p.top_p for p in params], torch.float32),
            buffers.vector("min_p", [p.min_p for p in params], torch.float32),
            buffers.vector("seeds", seeds, torch.int64),
            buffers.vector("steps", steps, torch.int64),
            backend=self.backend,
        )
        if processed is not raw:
            # The op's raw log-probs are of the logits it was given; the raw model's are of the untouched ones.
            raw_logprobs = ops.token_logprobs(raw, tokens)
        return SamplerOutput(tokens, logprobs, raw_logprobs)

    def _buffers_on(self, device: torch.device) -> StepBuffers:
        if self._buffers is None or self._buffers.device != device:
            self._buffers = StepBuffers(device)
        return self._buffers


def _block_under_min_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], output_ids: Sequence[Sequence[int]], eos: tuple[int, ...]
) -> torch.Tensor:
    """A copy of logits with the stop ids of rows under min_tokens at -inf, or `logits` itself if none are."""
    rows: list[int] = []
    cols: list[int] = []
    for row, (p, out) in enumerate(zip(params, output_ids, strict=True)):
        if len(out) < p.min_tokens:
            blocked = set(p.stop_token_ids) if p.ignore_eos else set(p.stop_token_ids) | set(eos)
            rows.extend([row] * len(blocked))
            cols.extend(sorted(blocked))
    if not rows:
        return logits
    col_index = torch.tensor(cols, dtype=torch.int64, device=logits.device)
    _check_ids(col_index, logits.shape[1], "stop_token_ids / eos_token_ids")
    blocked_logits = logits.clone()
    blocked_logits[torch.tensor(rows, dtype=torch.int64, device=logits.device), col_index] = float("-inf")
    return blocked_logits


def _apply_penalties(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    output_ids: Sequence[Sequence[int]],
    prompt_ids: Sequence[Sequence[int]] | None,
) -> torch.Tensor:
    """Repetition, frequency and presence penalties, in place on `logits` [B, V] (which the caller owns)."""
    device = logits.device
    active = [row for row, p in enumerate(params) if p.uses_penalties]  # rows outside get penalty 1 / 0 / 0 anyway
    output_counts = _token_counts(output_ids, active, logits.shape, device, "output_ids")  # [B, V] fp32
    repetition = torch.tensor([p.repetition_penalty for p in params], dtype=torch.float32, device=device)
    if any(p.repetition_penalty != 1.0 for p in params):
        if prompt_ids is None:
            raise ValueError("Sampler: prompt_ids are required when a row has repetition_penalty != 1")
        repeat_rows = [row for row in active if params[row].repetition_penalty != 1.0]
        seen = (_token_counts(prompt_ids, repeat_rows, logits.shape, device, "prompt_ids") > 0) | (output_counts > 0)
        r = repetition[:, None]  # [B, 1]
        logits = torch.where(seen, torch.where(logits > 0, logits / r, logits * r), logits)
    frequency = torch.tensor([p.frequency_penalty for p in params], dtype=torch.float32, device=device)
    presence = torch.tensor([p.presence_penalty for p in params], dtype=torch.float32, device=device)
    logits -= frequency[:, None] * output_counts + presence[:, None] * (output_counts > 0)
    return logits


def _token_counts(
    id_lists: Sequence[Sequence[int]], rows: list[int], shape: torch.Size, device: torch.device, name: str
) -> torch.Tensor:
    """[B, V] fp32 occurrence counts of each token in id_lists[row] for the given rows (zeros elsewhere)."""
    batch, vocab = shape
    counts = torch.zeros(batch * vocab, dtype=torch.float32, device=device)
    lengths = [len(id_lists[row]) for row in rows]
    if sum(lengths) == 0:
        return counts.view(batch, vocab)
    ids = torch.tensor(list(itertools.chain.from_iterable(id_lists[row] for row in rows)), dtype=torch.int64)
    _check_ids(ids, vocab, name)
    row_of_id = torch.repeat_interleave(torch.tensor(rows, dtype=torch.int64), torch.tensor(lengths))
    flat = (row_of_id * vocab + ids).to(device)  # [total ids] index into the flattened [B, V]
    counts.scatter_add_(0, flat, torch.ones(flat.shape, dtype=torch.float32, device=device))
    return counts.view(batch, vocab)


def _check_ids(ids: torch.Tensor, vocab: int, name: str) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise ValueError(
            f"Sampler: {name} hold ids outside [0, {vocab}) (the logits' vocab size): "
            f"min {int(ids.min())}, max {int(ids.max())}"
        )


def _check_call(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    seeds: Sequence[int],
    output_ids: Sequence[Sequence[int]],
    prompt_ids: Sequence[Sequence[int]] | None,
    steps: Sequence[int] | None,
) -> tuple[int, int]:
    if logits.dim() != 2 or not logits.dtype.is_floating_point:
        raise ValueError(f"Sampler: logits must be a float [B, V] tensor, got {logits.dtype} {tuple(logits.shape)}")
    rows, vocab = logits.shape
    per_row = {"params": params, "seeds": seeds, "output_ids": output_ids, "prompt_ids": prompt_ids, "steps": steps}
    for name, value in per_row.items():
        if value is not None and len(value) != rows:
            raise ValueError(f"Sampler: {name} has {len(value)} entries but logits have {rows} rows (one per row)")
    return rows, vocab
