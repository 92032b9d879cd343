"""Two engine runs of the same requests that must agree: the same tokens, and log-probs within the bound of two fp32
computations of them (another kernel order: inductor's, the packed weights')."""

from __future__ import annotations

import torch

from tests.tolerances import check


def assert_same_generations(model, prompts, a, b, temperature: float) -> None:
    """a, b: the RequestOutputs of the same prompts (token-id lists) and sampling parameters."""
    for prompt, x, y in zip(prompts, a, b, strict=True):
        for s1, s2 in zip(x.samples, y.samples, strict=True):
            assert s1.token_ids == s2.token_ids
        completions = [s.token_ids for s in x.samples]
        check("sequence_logprobs", torch.tensor([v for s in y.samples for v in s.logprobs]),
              torch.tensor([v for s in x.samples for v in s.logprobs], dtype=torch.float64), model=model,
              prompts=[prompt] * len(completions), completions=completions, temperature=temperature)
