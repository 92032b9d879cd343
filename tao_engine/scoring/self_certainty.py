"""Self-certainty of the policy (Kang et al. 2025, "Scalable Best-of-N Selection via Self-Certainty").

For a completion y of prompt x, with p_t the policy's next-token distribution over V tokens before token t:

    self_certainty = mean_t KL(U || p_t) = mean_t (-log V - mean_v log p_t(v)) = mean_t (lse(z_t) - mean_v z_t - log V)

where z_t are the logits. Confident (peaked) distributions are far from uniform and score high. It is computed by one
teacher-forced, cache-free forward of the policy over prompt + completion in packed token-budget batches; logits exist
only for `chunk_tokens` rows at a time, never [T, V] at once.

method="mean_logprob" is the cheap proxy: the mean of the generation log-probs the caller passes as context
`logprobs=[[...], ...]` (e.g. the engine's `SampleOutput.raw_logprobs`), with no forward at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tao_engine.scoring.chat_context import per_item, task_messages
from tao_engine.scoring.packing import packed_batch, token_budget_batches
from tao_engine.tokenizer import Tokenizer

METHODS = ("self_certainty", "mean_logprob")
DEFAULT_MAX_BATCH_TOKENS = 8192
DEFAULT_CHUNK_TOKENS = 256
_PER_COMPLETION_KEYS = ("completion_token_ids", "logprobs")
_CONTEXT_KEYS = ("prompt_token_ids", "prompt_messages", *_PER_COMPLETION_KEYS)


def self_certainty_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-row KL(uniform || softmax(logits)) in float32: [R, V] -> [R]."""
    z = logits.float()
    return torch.logsumexp(z, dim=-1) - z.mean(dim=-1) - math.log(z.shape[-1])


def predicting_rows(prompt_len: int, completion_len: int) -> range:
    """Rows (within prompt + completion) whose next-token distribution predicts a completion token. Row i predicts
    token i + 1; with an empty prompt the first completion token has no predicting row and is skipped."""
    return range(max(prompt_len, 1) - 1, prompt_len + completion_len - 1)


@torch.inference_mode()
def teacher_forced_self_certainty(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> list[float | None]:
    """Self-certainty of each completion under `model` (a tao_engine decoder); None when no token is predicted."""
    if len(prompts) != len(completions):
        raise ValueError(f"self_certainty: {len(prompts)} prompts but {len(completions)} completions")
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"self_certainty: chunk_tokens must be an int >= 1, got {chunk_tokens!r}")
    device = next(model.parameters()).device
    out: list[float | None] = [None] * len(prompts)
    todo = [i for i in range(len(prompts)) if len(predicting_rows(len(prompts[i]), len(completions[i]))) > 0]
    sequences = [list(prompts[i]) + list(completions[i]) for i in todo]
    for batch in token_budget_batches([len(s) for s in sequences], max_batch_tokens):
        ids, forward_batch, starts = packed_batch([sequences[b] for b in batch], device)
        hidden = model(ids, forward_batch)  # [N, H]
        rows, owner = [], []  # packed row index and the batch slot it belongs to
        for slot, (b, start) in enumerate(zip(batch, starts, strict=True)):
            i = todo[b]
            span = predicting_rows(len(prompts[i]), len(completions[i]))
            rows.extend(start + r for r in span)
            owner.extend([slot] * len(span))
        rows_t = torch.tensor(rows, dtype=torch.int64, device=device)
        owner_t = torch.tensor(owner, dtype=torch.int64, device=device)
        totals = torch.zeros(len(batch), dtype=torch.float64, device=device)
        for lo in range(0, len(rows), chunk_tokens):
            hi = min(lo + chunk_tokens, len(rows))
            logits = model.compute_logits(hidden[rows_t[lo:hi]])  # [c, V], the only vocabulary-wide tensor
            totals.index_add_(0, owner_t[lo:hi], self_certainty_of_logits(logits).double())
        counts = torch.bincount(owner_t, minlength=len(batch)).double()
        for slot, value in enumerate((totals / counts).tolist()):
            out[todo[batch[slot]]] = float(value)
    return out


class SelfCertaintyScorer:
    """Self-certainty of the policy on each completion (higher = more confident), pointwise or by groups.

    The policy comes as `engine=` (its model and tokenizer, shared, never copied), `model=` (a module, with
    `tokenizer=`) or a model directory path. Token ids are read from context when given (exactly what was
    generated): `prompt_token_ids` and `completion_token_ids`; otherwise the prompt (or context `prompt_messages`)
    is rendered with the chat template's generation prompt, as the engine renders chat prompts, and the completion
    is encoded as plain text. method="mean_logprob" needs no model: it reads context `logprobs`.

    Context shapes: `score` takes one entry per completion; `score_groups` (what CompositeScorer calls) takes one
    entry per prompt, where the per-completion keys (`completion_token_ids`, `logprobs`) hold a list per candidate.
    """

    name = "self_certainty"

    def __init__(
        self,
        method: str = "self_certainty",  # self_certainty (KL from uniform, needs the model) or mean_logprob (no model)
        model: nn.Module | str | Path | None = None,  # the policy's directory (or, in Python, the module)
        tokenizer: Tokenizer | None = None,  # Python only: the tokenizer of a module given as model
        engine: Any = None,  # Python only: the policy's engine (its model and tokenizer, shared)
        *,
        dtype: str | None = None,  # of a model loaded from a directory
        device: str = "cpu",  # where a loaded model runs
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,  # tokens per forward
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,  # logits are reduced this many positions at a time (memory)
        chat_template: bool = True,  # render text prompts with the chat template, as the engine does
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"self_certainty: method must be one of {METHODS}, got {method!r}")
        for key, value in (("max_batch_tokens", max_batch_tokens), ("chunk_tokens", chunk_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"self_certainty: {key} must be an int >= 1, got {value!r}")
        if engine is not None:
            if model is not None:
                raise ValueError("self_certainty: give engine= or model=, not both")
            model, tokenizer = engine.model, tokenizer or engine.tokenizer
        elif isinstance(model, (str, Path)):
            from tao_engine.pretrained import load_pretrained

            model, loaded = load_pretrained(model, dtype=dtype, device=device)
            tokenizer = tokenizer or loaded
        if method == "self_certainty" and model is None:
            raise ValueError(
                "self_certainty: method='self_certainty' needs the policy: pass engine= (the generation engine), "
                "model= (a decoder module or model directory), or use method='mean_logprob'"
            )
        if model is not None and not hasattr(model, "compute_logits"):
            raise TypeError(f"self_certainty: model must be a tao_engine decoder, got {type(model).__name__}")
        self.method = method
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.chunk_tokens = chunk_tokens
        self.chat_template = chat_template

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> list[float | None]:
        count = len(completions)
        if len(prompts) != count:
            raise ValueError(f"self_certainty: {len(prompts)} prompts but {count} completions")
        if self.method == "mean_logprob":
            return _mean_logprobs(_context_list(context, "logprobs", count, required=True), count)
        prompt_ids = _context_list(context, "prompt_token_ids", count)
        completion_ids = _context_list(context, "completion_token_ids", count)
        messages = per_item(context, count, self.name)
        if prompt_ids is None:
            prompt_ids = [self._encode_prompt(p, m) for p, m in zip(prompts, messages, strict=True)]
        if completion_ids is None:
            completion_ids = [self._encode_completion(c) for c in completions]
        assert self.model is not None
        return teacher_forced_self_certainty(
            self.model, prompt_ids, completion_ids, self.max_batch_tokens, self.chunk_tokens
        )

    def score_groups(
        self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any
    ) -> list[list[float | None]]:
        if len(prompts) != len(groups):
            raise ValueError(f"self_certainty: {len(prompts)} prompts but {len(groups)} groups")
        sizes = [len(g) for g in groups]
        flat: dict[str, list[Any]] = {}
        for key, values in context.items():
            if key not in _CONTEXT_KEYS:
                continue  # other scorers' context
            values = _context_list(context, key, len(groups))
            assert values is not None
            if key in _PER_COMPLETION_KEYS:
                for g, (value, n) in enumerate(zip(values, sizes, strict=True)):
                    if len(value) != n:
                        raise ValueError(f"self_certainty: context {key!r}[{g}] has {len(value)} entries for the "
                                         f"{n} candidates of prompt {g}; give one per candidate")
                flat[key] = [v for value in values for v in value]
            else:
                flat[key] = [value for value, n in zip(values, sizes, strict=True) for _ in range(n)]
        flat_prompts = [p for p, n in zip(prompts, sizes, strict=True) for _ in range(n)]
        scores = self.score(flat_prompts, [c for g in groups for c in g], **flat)
        out, start = [], 0
        for n in sizes:
            out.append(scores[start : start + n])
            start += n
        return out

    def _need_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(
                "self_certainty: text prompts need a tokenizer (pass tokenizer= or engine=), or pass context "
                "prompt_token_ids= and completion_token_ids="
            )
        return self.tokenizer

    def _encode_prompt(self, prompt: str, messages: Any = None) -> list[int]:
        tokenizer = self._need_tokenizer()
        if self.chat_template and tokenizer.chat_template is not None:
            chat = task_messages(prompt, messages, self.name)
            text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            assert isinstance(text, str)
            return tokenizer.encode(text, add_special_tokens=False)
        return tokenizer.encode(prompt, add_special_tokens=True)

    def _encode_completion(self, completion: str) -> list[int]:
        return self._need_tokenizer().encode(completion, add_special_tokens=False)


def _context_list(context: dict[str, Any], key: str, count: int, required: bool = False) -> list[Any] | None:
    values = context.get(key)
    if values is None:
        if required:
            raise ValueError(
                f"self_certainty: method='mean_logprob' needs context {key}=[[...], ...] (the generation log-probs "
                "of each completion, e.g. SampleOutput.raw_logprobs)"
            )
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != count:
        raise ValueError(f"self_certainty: context {key!r} must be a list with {count} entries (one per item)")
    return list(values)


def _mean_logprobs(logprobs: list[Sequence[float]] | None, count: int) -> list[float | None]:
    assert logprobs is not None and len(logprobs) == count
    return [float(sum(lps) / len(lps)) if len(lps) else None for lps in logprobs]
