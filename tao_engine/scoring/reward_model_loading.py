"""Sequence-classification reward models: our decoder plus transformers' `score` head, loaded from HF directories.

A `LlamaForSequenceClassification` / `Qwen2ForSequenceClassification` / `Qwen3ForSequenceClassification` /
`MistralForSequenceClassification` checkpoint holds the decoder under `model.*` (the same names as the causal LM) and
`score.weight` [num_labels, hidden] (no bias) instead of `lm_head.weight`. The head reads the final-normed hidden
state of each sequence's last non-pad token, as transformers' `GenericForSequenceClassification` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from tao_engine.forward_batch import ForwardBatch
from tao_engine.models.config import ModelConfig
from tao_engine.models.decoder import DecoderModel
from tao_engine.models.loading import (
    ModelLoadError,
    assign_weights,
    read_config,
    resolve_dtype,
    weight_files,
)
from tao_engine.models.registry import get_model_class

# Sequence-classification architecture -> the causal LM whose decoder it shares (same `model.*` weights and flags).
SEQUENCE_CLASSIFICATION_ARCHITECTURES = {
    "LlamaForSequenceClassification": "LlamaForCausalLM",
    "MistralForSequenceClassification": "MistralForCausalLM",
    "Qwen2ForSequenceClassification": "Qwen2ForCausalLM",
    "Qwen3ForSequenceClassification": "Qwen3ForCausalLM",
}
SCORE_WEIGHT = "score.weight"


class DecoderForSequenceClassification(nn.Module):
    """Decoder + linear `score` head [num_labels, hidden] without bias; parameter names as in transformers."""

    def __init__(self, config: ModelConfig, num_labels: int) -> None:
        super().__init__()
        arch = config.architectures[0]
        causal = SEQUENCE_CLASSIFICATION_ARCHITECTURES.get(arch)
        if causal is None:
            raise ValueError(
                f"DecoderForSequenceClassification: architecture {arch!r} is not a supported sequence classifier; "
                f"supported: {', '.join(SEQUENCE_CLASSIFICATION_ARCHITECTURES)}"
            )
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"DecoderForSequenceClassification: num_labels must be an int >= 1, got {num_labels!r}")
        # The causal class of the same family decides the decoder's optional pieces (biases, q/k norms).
        flags = get_model_class(dataclasses.replace(config, architectures=[causal])).decoder_flags(config)
        self.config = config
        self.num_labels = num_labels
        self.model = DecoderModel(config, flags)
        self.score = nn.Linear(config.hidden_size, num_labels, bias=False)

    @property
    def pad_token_id(self) -> int | None:
        return self.config.pad_token_id

    def forward(self, input_ids: torch.Tensor, batch: ForwardBatch, pooled_index: torch.Tensor) -> torch.Tensor:
        """Packed tokens [N] (a cache-free prefill batch) and the packed index of each sequence's pooled token
        [num_seqs] -> head logits [num_seqs, num_labels] in float32."""
        if not batch.is_prefill:
            raise ValueError("DecoderForSequenceClassification.forward: the batch must be a full prefill (no cache)")
        if input_ids.dim() != 1 or input_ids.numel() != batch.num_tokens:
            raise ValueError(
                f"DecoderForSequenceClassification.forward: input_ids must be 1-D with batch.num_tokens="
                f"{batch.num_tokens} entries, got shape {tuple(input_ids.shape)}"
            )
        if pooled_index.shape != (batch.num_seqs,):
            raise ValueError(
                f"DecoderForSequenceClassification.forward: pooled_index must be [num_seqs={batch.num_seqs}], got "
                f"shape {tuple(pooled_index.shape)}"
            )
        hidden = self.model(input_ids, batch)  # [N, H]
        return self.score(hidden[pooled_index]).float()  # [B, H] -> [B, L]


def pooled_position(token_ids: list[int], pad_token_id: int | None) -> int:
    """Index of the token the head reads: the last one that is not the pad token (transformers' rule, which also
    skips a trailing pad token inside the text, e.g. when pad == eos); 0 when every token is pad; the last token when
    the model has no pad token."""
    if pad_token_id is None:
        return len(token_ids) - 1
    for i in range(len(token_ids) - 1, -1, -1):
        if token_ids[i] != pad_token_id:
            return i
    return 0


def _score_shape(model_dir: Path, files: list[str]) -> tuple[int, ...]:
    for shard in files:
        path = model_dir / shard
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                if SCORE_WEIGHT in f.keys():
                    return tuple(f.get_slice(SCORE_WEIGHT).get_shape())
        except SafetensorError as exc:
            raise ModelLoadError(f"{path}: corrupt or unreadable safetensors file ({exc})") from exc
    raise ModelLoadError(
        f"{model_dir}: no {SCORE_WEIGHT!r} tensor in the safetensors: not a sequence-classification reward model "
        "(a causal LM checkpoint has lm_head.weight instead; use a *ForSequenceClassification checkpoint)"
    )


def _configured_num_labels(config: ModelConfig) -> int | None:
    id2label = config.extra.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    num_labels = config.extra.get("num_labels")
    return num_labels if isinstance(num_labels, int) else None


def load_reward_model(
    model_dir: str | Path, dtype: torch.dtype | str | None = None, device: torch.device | str = "cpu"
) -> DecoderForSequenceClassification:
    """Build the reward model of `model_dir` and load its weights, in `dtype` (default float32) on `device`."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    arch = config.architectures[0]
    if arch not in SEQUENCE_CLASSIFICATION_ARCHITECTURES:
        raise ModelLoadError(
            f"{model_dir / 'config.json'}: architecture {arch!r} is not a sequence-classification reward model; "
            f"supported: {', '.join(SEQUENCE_CLASSIFICATION_ARCHITECTURES)}"
        )
    target_dtype = resolve_dtype(dtype, config)
    files = list(weight_files(model_dir))
    shape = _score_shape(model_dir, files)
    if len(shape) != 2 or shape[1] != config.hidden_size:
        raise ModelLoadError(
            f"{model_dir}: {SCORE_WEIGHT!r} has shape {shape}; expected [num_labels, hidden_size={config.hidden_size}]"
        )
    num_labels = shape[0]
    configured = _configured_num_labels(config)
    if configured is not None and configured != num_labels:
        raise ModelLoadError(
            f"{model_dir}: config.json declares {configured} labels (id2label/num_labels) but {SCORE_WEIGHT!r} has "
            f"{num_labels} rows"
        )
    with torch.device("meta"):
        model = DecoderForSequenceClassification(config, num_labels)
    expected = {name: p.shape for name, p in model.state_dict().items()}

    assign_weights(model, model_dir, files, expected, device, target_dtype,
                   f"for {arch} (the head must be {SCORE_WEIGHT!r} without bias)")
    return model.eval()
