"""Shared test helpers: tiny random transformers models and our own tiny decoder (tolerances: tests/tolerances.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]

_TINY = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)

# name -> (model_type, architecture, config overrides). Together they cover every architecture and option we support.
HF_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("llama", "LlamaForCausalLM", {"pad_token_id": 0}),
    "llama3_rope_bias": (
        "llama",
        "LlamaForCausalLM",
        {
            "num_hidden_layers": 3,
            "rope_theta": 500000.0,
            # original context 64 with head_dim 16 puts frequencies in all three llama3 bands.
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "attention_bias": True,
            "mlp_bias": True,
        },
    ),
    "llama_tied": ("llama", "LlamaForCausalLM", {"tie_word_embeddings": True, "rope_scaling": None}),
    "mistral": ("mistral", "MistralForCausalLM", {"sliding_window": None, "rope_theta": 1e6}),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", {"head_dim": 16}),
    "qwen3_head_dim24_bias": ("qwen3", "Qwen3ForCausalLM", {"head_dim": 24, "attention_bias": True}),
}


def hf_config(case: str) -> Any:
    from transformers import AutoConfig

    model_type, arch, overrides = HF_CASES[case]
    kwargs = {**_TINY, **overrides, "architectures": [arch]}
    return AutoConfig.for_model(model_type, **kwargs)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Replace every parameter with noise large enough that wiring mistakes (a missed norm, bias or scale) show in
    the logits: norm weights near 1, biases and matrices with unit-order activations."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if "norm" in name:
            value = 1.0 + 0.2 * noise
        elif name.endswith("bias"):
            value = 0.1 * noise
        elif "embed_tokens" in name:
            value = 0.5 * noise
        else:
            value = 0.15 * noise
        param.copy_(value.to(param.dtype))


def make_hf_model(case: str, seed: int = 0) -> Any:
    """A tiny random transformers causal LM (fp32, eager attention, eval mode)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(case), attn_implementation="eager", dtype=torch.float32)
    randomize_(model, seed)
    return model.eval()


def padded_batch(
    lengths: list[int], vocab_size: int, left: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids [B, T], attention mask [B, T] and transformers-style position_ids (cumsum(mask) - 1, clamped)."""
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(0, vocab_size, (len(lengths), t), generator=gen)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for row, n in enumerate(lengths):
        if left:
            mask[row, t - n :] = 1
        else:
            mask[row, :n] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def tiny_config(**overrides: Any) -> Any:
    """The ModelConfig of our own tiny decoder: Llama with the sizes of _TINY unless `overrides` say otherwise."""
    from tao_engine.models import ModelConfig

    return ModelConfig(**{"architectures": ["LlamaForCausalLM"], "model_type": "llama", **_TINY, **overrides})


def tiny_model(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Our own tiny random decoder (tiny_config(**overrides)), randomized by `randomize_`, eval mode."""
    from tao_engine.models import build_model

    model = build_model(tiny_config(**overrides))
    randomize_(model, seed=seed)
    return model.eval()


def run_at_baseline_isa(code: str, timeout: int = 300, root_on_path: bool = True) -> subprocess.CompletedProcess:
    """Runs `code` in a child Python with ATEN_CPU_CAPABILITY=default, which makes ATen and the extension's host code
    pick the baseline-ISA copies of the kernels (the test process runs the AVX2 copies wherever the CPU has AVX2), and
    asserts that the child really ran at that capability and exited 0. The child starts with -P in the repository
    root; `root_on_path` puts the root on its PYTHONPATH for `tests.` imports (not for a child that runs pytest:
    tests/conftest.py refuses the root on sys.path)."""
    preamble = "import torch\nassert torch.backends.cpu.get_cpu_capability() == 'DEFAULT'\n"
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT) if root_on_path else None) if p)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-P", "-c", preamble + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done
