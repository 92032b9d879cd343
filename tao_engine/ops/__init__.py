"""The dispatch layer: the only place that imports Triton kernels or the compiled extension (lazily).

Every op is `op(..., backend=None)`; see `registry.py` for how a backend is chosen.
"""

from tao_engine.ops.activation import silu_and_mul
from tao_engine.ops.add_rms_norm import add_rms_norm
from tao_engine.ops.advantages import group_advantages
from tao_engine.ops.attention import varlen_causal_attention
from tao_engine.ops.decode_layer import decode_layer
from tao_engine.ops.kv_cache import copy_blocks, write_kv_cache
from tao_engine.ops.linear_logprobs import linear_logprobs
from tao_engine.ops.logprobs import token_logprobs
from tao_engine.ops.paged_attention import paged_decode_attention, paged_prefill_attention
from tao_engine.ops.policy_loss import PolicyLossOutput, policy_loss
from tao_engine.ops.registry import BackendUnavailableError, all_ops, use_backend
from tao_engine.ops.rms_norm import rms_norm
from tao_engine.ops.rotary import apply_rotary
from tao_engine.ops.sampling import sample
from tao_engine.ops.shared_prefix_attention import shared_prefix_attention

__all__ = [
    "BackendUnavailableError",
    "PolicyLossOutput",
    "add_rms_norm",
    "all_ops",
    "apply_rotary",
    "copy_blocks",
    "decode_layer",
    "group_advantages",
    "linear_logprobs",
    "paged_decode_attention",
    "paged_prefill_attention",
    "policy_loss",
    "rms_norm",
    "sample",
    "shared_prefix_attention",
    "silu_and_mul",
    "token_logprobs",
    "use_backend",
    "varlen_causal_attention",
    "write_kv_cache",
]
