"""Tolerances of the Triton kernel tests, per (check, dtype), against an fp64 reference on the same inputs.

Used as `torch.testing.assert_close(got.double(), ref64, **tolerance(check, dtype))`. The margins come from the
arithmetic, not from observed errors: float32 work gives ~1e-6 relative; a bfloat16 result carries up to two
roundings of 2**-9 each (the normalized row and the weight product for RMSNorm), hence ~4 ulps of slack.
"""

from __future__ import annotations

import torch

_TOLERANCES: dict[tuple[str, torch.dtype], dict[str, float]] = {
    ("rms_norm", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("rms_norm", torch.bfloat16): {"atol": 1e-2, "rtol": 1.6e-2},
    ("rms_norm_grad", torch.float32): {"atol": 2e-5, "rtol": 1e-5},
    ("rms_norm_grad", torch.bfloat16): {"atol": 2e-2, "rtol": 1.6e-2},
    # Log-probs are computed in float32 from exactly upcast inputs whatever the logits' dtype.
    ("token_logprobs", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("token_logprobs", torch.float16): {"atol": 1e-5, "rtol": 1e-5},
    ("token_logprobs", torch.bfloat16): {"atol": 1e-5, "rtol": 1e-5},
    ("token_logprobs_grad", torch.float32): {"atol": 1e-5, "rtol": 1e-5},
    ("token_logprobs_grad", torch.bfloat16): {"atol": 1e-2, "rtol": 1.6e-2},
}


def tolerance(check: str, dtype: torch.dtype) -> dict[str, float]:
    try:
        return _TOLERANCES[(check, dtype)]
    except KeyError:
        known = sorted({name for name, _ in _TOLERANCES})
        raise KeyError(
            f"no tolerance for ({check!r}, {dtype}) in tests/kernels/tolerances.py; checks: {known}"
        ) from None
