"""RotaryEmbedding: inverse frequencies equal transformers' ROPE_INIT_FUNCTIONS, cos/sin equal its rotary module."""

from __future__ import annotations

import pytest
import torch

from tao_engine.layers.rotary import RotaryEmbedding, compute_inv_freq, normalize_rope_scaling
from tests.tolerances import check

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _hf_config(head_dim: int, theta: float, scaling: dict | None, max_positions: int = 131072):  # noqa: ANN202
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=max_positions,
    )


@pytest.mark.parametrize("head_dim", [64, 128, 24])
def test_llama3_inv_freq_equals_transformers(head_dim: int) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    expected, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](_hf_config(head_dim, 500000.0, dict(LLAMA3)))
    got = compute_inv_freq(head_dim, 500000.0, LLAMA3)
    assert attention_factor == 1.0  # we apply no cos/sin scaling, so transformers must not either
    assert got.dtype == torch.float32 and got.shape == (head_dim // 2,)
    assert torch.equal(got, expected)
    # The scaling really acts: low frequencies are slowed, the highest is untouched.
    plain = compute_inv_freq(head_dim, 500000.0, None)
    assert got[0] == plain[0] and torch.all(got[-1] < plain[-1])


def test_linear_and_default_inv_freq_equal_transformers() -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    linear = {"rope_type": "linear", "factor": 4.0}
    expected, _ = ROPE_INIT_FUNCTIONS["linear"](_hf_config(32, 10000.0, dict(linear)))
    assert torch.equal(compute_inv_freq(32, 10000.0, linear), expected)
    expected, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(_hf_config(32, 1e6, None))
    assert torch.equal(compute_inv_freq(32, 1e6, None), expected)


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
def test_cos_sin_match_transformers_up_to_131k_positions(scaling: dict | None) -> None:
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    head_dim = 64
    hf = LlamaRotaryEmbedding(_hf_config(head_dim, 500000.0, dict(scaling) if scaling else None))
    positions = torch.tensor([0, 1, 7, 4099, 8191, 8192, 65537, 131071])
    cos_ref, sin_ref = hf(torch.zeros(1, dtype=torch.float32), positions[None])  # [1, N, D]
    cos, sin = RotaryEmbedding(head_dim, 500000.0, scaling)(positions)
    assert cos.shape == sin.shape == (positions.numel(), head_dim) and cos.dtype == torch.float32
    check("rotary_cos_sin", cos, cos_ref[0])
    check("rotary_cos_sin", sin, sin_ref[0])


def test_no_buffers_and_works_after_meta_construction() -> None:
    with torch.device("meta"):
        rotary = RotaryEmbedding(16, 10000.0, {"type": "linear", "factor": 2.0})
    assert list(rotary.parameters()) == [] and list(rotary.buffers()) == [] and rotary.state_dict() == {}
    assert not rotary.inv_freq.is_meta
    positions = torch.tensor([3, 0, 5])
    cos, sin = rotary(positions)
    expected_angle = 5 * compute_inv_freq(16, 10000.0, {"rope_type": "linear", "factor": 2.0})
    check("rotary_cos_sin", cos[2, :8], expected_angle.cos())
    check("rotary_cos_sin", cos[2, 8:], expected_angle.cos())
    assert torch.equal(sin[1], torch.zeros(16))  # position 0: sin(0) is 0 exactly


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ({"rope_type": "yarn", "factor": 4.0}, "unsupported rope type 'yarn'"),
        ({"type": "dynamic", "factor": 2.0}, "unsupported rope type 'dynamic'"),
        ({"rope_type": "llama3", "factor": 8.0}, "requires key 'low_freq_factor'"),
        ({"rope_type": "linear", "factor": -1.0}, "'factor' must be a positive number"),
        ({**LLAMA3, "high_freq_factor": 0.5}, "high_freq_factor > low_freq_factor"),
        ("linear", "must be a dict"),
    ],
)
def test_invalid_scaling_raises(scaling: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_rope_scaling(scaling)  # type: ignore[arg-type]
    if isinstance(scaling, dict):
        with pytest.raises(ValueError, match=message):
            RotaryEmbedding(16, 10000.0, scaling)


def test_default_type_normalises_to_none_and_bad_shapes_raise() -> None:
    assert normalize_rope_scaling({"type": "default"}) is None
    assert normalize_rope_scaling({"rope_type": "linear", "factor": 2, "rope_theta": 5.0}) == {
        "rope_type": "linear",
        "factor": 2,
    }
    with pytest.raises(ValueError, match="head_dim must be a positive even number"):
        RotaryEmbedding(15, 10000.0)
    with pytest.raises(ValueError, match="positions must be 1-D"):
        RotaryEmbedding(16, 10000.0)(torch.zeros(2, 3, dtype=torch.long))
