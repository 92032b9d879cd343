"""Bounds on per-sequence quantities of a whole model (the log-probs of completion tokens, self-certainty scores):
the model's own rounding, propagated by tests/bounds/model.py, plus the final fp32 reductions over the vocabulary
(tests/bounds/softmax.py)."""

from __future__ import annotations

import math

import torch

from tests.bounds.model import output_bound
from tests.bounds.softmax import softmax_rows, token_logprobs_bound
from tests.error_bounds import LAMBDA, unit_roundoff

U32 = unit_roundoff(torch.float32)


def sequence_logprobs_bound(model: torch.nn.Module, prompts: list[list[int]], completions: list[list[int]],
                            temperature: float = 1.0, implementations: int = 2) -> torch.Tensor:
    """Each completion token's log-prob under a whole-sequence forward, flattened in sequence order: the model's
    rounding (whole-model noise) plus the final log-softmax's over V, for each implementation."""
    from tao_engine.forward_batch import ForwardBatch

    def rows(m: torch.nn.Module) -> list[torch.Tensor]:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if completion:
                ids = torch.tensor(prompt + completion)
                logits = m.compute_logits(m(ids, ForwardBatch.for_sequences([len(ids)])))
                out.append(logits[len(prompt) - 1 : len(prompt) + len(completion) - 1])
        return out

    targets = torch.tensor([t for c in completions for t in c], dtype=torch.long)

    def logprobs(m: torch.nn.Module) -> torch.Tensor:
        logits = torch.cat(rows(m)).double()
        return torch.log_softmax(logits / temperature, -1).gather(-1, targets[:, None]).squeeze(-1)

    with torch.no_grad():
        logits = torch.cat(rows(model))
    network = output_bound(model, logprobs, implementations)[1]
    return network + implementations * token_logprobs_bound(logits, targets, temperature)


def self_certainty_rows_bound(logits: torch.Tensor) -> torch.Tensor:
    """lse(z) - mean(z) - log V of given fp32 logits [R, V], per row."""
    z = logits.detach().double().cpu()
    vocab = z.shape[-1]
    lse = torch.logsumexp(z, -1)
    return (softmax_rows(z, 1.0).lse_error.squeeze(-1) + (LAMBDA * math.sqrt(vocab) + 2) * U32
            * z.abs().mean(-1) + 3 * U32 * (lse.abs() + z.mean(-1).abs() + math.log(vocab)))


def self_certainty_bound(model: torch.nn.Module, prompts: list[list[int]], completions: list[list[int]]
                         ) -> torch.Tensor:
    """Per sequence: mean over its predicting rows of lse(z) - mean(z) - log V in fp32, against the fp64 definition:
    the model's rounding (whole-model noise through the definition), each row's lse (softmax_rows), its mean over V
    (LAMBDA sqrt(V) u mean |z|), three roundings of the terms, and the mean over the rows."""
    from tao_engine.forward_batch import ForwardBatch

    def rows(m: torch.nn.Module, prompt: list[int], completion: list[int]) -> torch.Tensor:
        ids = prompt + completion
        logits = m.compute_logits(m(torch.tensor(ids), ForwardBatch.for_sequences([len(ids)]))).double()
        return logits[max(len(prompt), 1) - 1 : len(ids) - 1]  # the rows that predict completion tokens

    def definition(m: torch.nn.Module) -> torch.Tensor:
        values = [torch.logsumexp(z, -1) - z.mean(-1) - math.log(z.shape[-1]) for z in
                  (rows(m, p, c) for p, c in zip(prompts, completions, strict=True))]
        return torch.stack([v.mean() for v in values])

    network = output_bound(model, definition, implementations=1)[1]
    local = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            z = rows(model, prompt, completion)
            value = torch.logsumexp(z, -1) - z.mean(-1) - math.log(z.shape[-1])
            row = self_certainty_rows_bound(z)
            local.append(row.mean() + (LAMBDA * math.sqrt(len(row)) + 1) * U32 * value.abs().mean())
    return network + torch.stack(local)
