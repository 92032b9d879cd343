"""`RewardModelScorer`: a sequence-classification reward model scoring (prompt, completion) pairs in packed batches.

Each pair is rendered as a chat (user: prompt, or context `prompt_messages`; assistant: completion) with the reward
model's own chat template, tokenized, and packed with the others into token-budget batches; one cache-free forward
per batch gives the head's logit at each sequence's last non-pad token (see reward_model_loading.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tao_engine.scoring.chat_context import per_item, task_messages
from tao_engine.scoring.packing import packed_batch, token_budget_batches
from tao_engine.scoring.reward_model_loading import DecoderForSequenceClassification, load_reward_model, pooled_position
from tao_engine.tokenizer import Tokenizer

DEFAULT_MAX_BATCH_TOKENS = 8192


class RewardModelScorer:
    """Pointwise scorer: the reward model's logit (label `label_index`) for each (prompt, completion)."""

    name = "reward_model"

    def __init__(
        self,
        model: str | Path | DecoderForSequenceClassification,  # a reward model directory (or, in Python, a module)
        tokenizer: Tokenizer | None = None,  # Python only: the tokenizer of a module given as model
        *,
        dtype: torch.dtype | str | None = None,  # of the loaded reward model (default float32)
        device: str | torch.device = "cpu",  # where the loaded reward model runs
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,  # tokens per forward of the reward model
        max_length: int | None = None,  # longer (prompt, completion) sequences are cut; unset: its context length
        label_index: int = 0,  # which output logit is the reward
        chat_template: bool = True,  # render (prompt, completion) with the reward model's chat template
    ) -> None:
        if isinstance(model, (str, Path)):
            path = Path(model)
            model = load_reward_model(path, dtype=dtype, device=device)
            tokenizer = tokenizer or Tokenizer.from_dir(path)
        if not isinstance(model, DecoderForSequenceClassification):
            raise TypeError(
                "RewardModelScorer: model must be a reward model directory or a DecoderForSequenceClassification "
                f"(load_reward_model), got {type(model).__name__}"
            )
        if tokenizer is None:
            raise ValueError("RewardModelScorer: a model object needs tokenizer=; a model directory brings its own")
        _check_int("max_batch_tokens", max_batch_tokens, minimum=1)
        if max_length is None:
            max_length = model.config.max_position_embeddings
        _check_int("max_length", max_length, minimum=1)
        _check_int("label_index", label_index, minimum=0)
        if label_index >= model.num_labels:
            raise ValueError(
                f"RewardModelScorer: label_index={label_index} but the reward model has {model.num_labels} label(s); "
                f"choose 0..{model.num_labels - 1}"
            )
        if not isinstance(chat_template, bool):
            raise ValueError(f"RewardModelScorer: chat_template must be true or false, got {chat_template!r}")
        if chat_template and tokenizer.chat_template is None:
            raise ValueError(
                "RewardModelScorer: the tokenizer has no chat template; add one to tokenizer_config.json, or pass "
                "chat_template=False to score the plain text prompt + completion"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_length = max_length
        self.label_index = label_index
        self.chat_template = chat_template
        self._counters = {"sequences": 0, "tokens": 0, "truncated": 0}

    def encode(self, prompt: str, completion: str, messages: Any = None) -> list[int]:
        """Token ids of one pair as the reward model reads it: the chat before the completion (`messages`, else the
        prompt as one user turn) plus the completion as the assistant's turn, rendered with the reward model's own
        template; with chat_template=False, the plain text prompt + completion."""
        if not self.chat_template:
            return self.tokenizer.encode(prompt + completion, add_special_tokens=True)
        chat = [*task_messages(prompt, messages, self.name), {"role": "assistant", "content": completion}]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False)
        assert isinstance(text, str)
        # The template wrote every control token itself (BOS included), so none is added on top.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"reward_model: {len(prompts)} prompts but {len(completions)} completions")
        sequences = []
        messages = per_item(context, len(prompts), self.name)
        for prompt, completion, chat in zip(prompts, completions, messages, strict=True):
            ids = self.encode(prompt, completion, chat)
            if len(ids) > self.max_length:
                # Keep the end: the head reads the last token, so that is the part that must stay.
                ids = ids[-self.max_length :]
                self._counters["truncated"] += 1
            sequences.append(ids)
        return self.score_token_ids(sequences)

    def score_token_ids(self, sequences: Sequence[Sequence[int]]) -> list[float | None]:
        """Head logits for already tokenized sequences; None for an empty one."""
        scores: list[float | None] = [None] * len(sequences)
        present = [i for i, s in enumerate(sequences) if len(s) > 0]
        device = next(self.model.parameters()).device
        pad = self.model.pad_token_id
        with torch.inference_mode():
            for batch in token_budget_batches([len(sequences[i]) for i in present], self.max_batch_tokens):
                chosen = [list(sequences[present[b]]) for b in batch]
                ids, forward_batch, starts = packed_batch(chosen, device)
                pooled = [start + pooled_position(seq, pad) for start, seq in zip(starts, chosen, strict=True)]
                pooled_index = torch.tensor(pooled, dtype=torch.int64, device=device)
                logits = self.model(ids, forward_batch, pooled_index)  # [B, num_labels] fp32
                for b, value in zip(batch, logits[:, self.label_index].tolist(), strict=True):
                    scores[present[b]] = float(value)
                self._counters["sequences"] += len(chosen)
                self._counters["tokens"] += ids.numel()
        return scores

    def metrics(self) -> dict[str, float]:
        """Counters since the last call: sequences scored, tokens run, sequences truncated to max_length."""
        out = {key: float(value) for key, value in self._counters.items()}
        self._counters = dict.fromkeys(self._counters, 0)
        return out


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"RewardModelScorer: {name} must be an int >= {minimum}, got {value!r}")
