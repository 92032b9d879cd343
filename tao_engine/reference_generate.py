"""Cache-free autoregressive generation: every step re-runs the whole sequence through the model.

It is quadratic in length and meant as the oracle that the paged engine is tested against (same model, same
seeds, same tokens), and as the simple generator of the foundation's chat demo.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tao_engine.forward_batch import ForwardBatch


@torch.inference_mode()
def next_token_logits(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """Logits [V] (fp32) of the token after `ids`."""
    device = next(model.parameters()).device
    batch = ForwardBatch.for_sequences([len(ids)], device=device)
    hidden = model(torch.tensor(ids, dtype=torch.long, device=device), batch)  # [T, H]
    return model.compute_logits(hidden[-1:]).float()[0]


def sample_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """Greedy when temperature == 0, else nucleus sampling from softmax(logits / temperature)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = torch.cumsum(sorted_probs, 0) - sorted_probs >= top_p
        sorted_probs[drop] = 0
        return int(order[torch.multinomial(sorted_probs, 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def stream_tokens(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: set[int] | frozenset[int] = frozenset(),
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time; a stop id is yielded and ends the stream."""
    if not prompt_ids:
        raise ValueError("prompt_ids: empty; give at least one token")
    if max_new_tokens < 0 or temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(
            f"max_new_tokens must be >= 0 (got {max_new_tokens}), temperature >= 0 (got {temperature}), "
            f"top_p in (0, 1] (got {top_p})"
        )
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    for _ in range(max_new_tokens):
        token = sample_token(next_token_logits(model, ids).cpu(), temperature, top_p, generator)
        ids.append(token)
        yield token
        if token in stop_ids:
            return


def generate_tokens(model: nn.Module, prompt_ids: list[int], max_new_tokens: int, **kwargs) -> list[int]:
    """All new tokens of `stream_tokens` as a list."""
    return list(stream_tokens(model, prompt_ids, max_new_tokens, **kwargs))
