"""Building blocks of decoder models. Layers hold parameters and call `tao_engine.ops` for the math."""

from tao_engine.layers.attention import Attention
from tao_engine.layers.mlp import GatedMLP
from tao_engine.layers.norm import RMSNorm
from tao_engine.layers.rotary import SUPPORTED_ROPE_TYPES, RotaryEmbedding, compute_inv_freq, normalize_rope_scaling

__all__ = [
    "SUPPORTED_ROPE_TYPES",
    "Attention",
    "GatedMLP",
    "RMSNorm",
    "RotaryEmbedding",
    "compute_inv_freq",
    "normalize_rope_scaling",
]
