"""Triton kernels of tao_engine, installed as `tao_engine.kernels` (pyproject maps this folder there).

Triton code only: kernels, their host-side launchers and the `torch.autograd.Function`s that wrap them. Nothing here
imports tao_engine internals; only `tao_engine.ops` imports these modules, lazily, inside its `triton` backends, so
`import tao_engine` never imports triton.

Every module runs unchanged on a GPU and on CPU tensors under `TRITON_INTERPRET=1` (the variable is read when a
module's kernels are decorated, so it must be set before the first import of a kernel module). One interpreter fault
is worked around here for all kernels: its float32 -> bfloat16 cast truncates instead of rounding to nearest even,
so outputs go through `cast_rne`, which rounds in integer arithmetic and is bit-exact on both.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def cast_rne(x, DTYPE: tl.constexpr):
    """Cast float32 `x` to `DTYPE` rounding to nearest even, as torch's `.to(dtype)` does."""
    if DTYPE == tl.bfloat16:
        # bfloat16 is the top half of a float32: add half an ulp of the kept part (plus the tie-to-even bit) to the
        # dropped half and keep the upper 16 bits. Overflow carries into the exponent correctly (-> inf); NaN is
        # passed through separately because adding to its payload could turn it into an infinity.
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        return tl.where(x != x, x.to(tl.bfloat16), rounded)
    else:
        return x.to(DTYPE)


def interpreted(kernel: object) -> bool:
    """Whether `kernel` runs in triton's CPU interpreter (TRITON_INTERPRET was set when its module was imported)
    rather than compiled for a GPU. Launchers ask this, not the tensors' device: bench/aot_check.py compiles the
    launches of CPU tensors for a GPU target."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)
