"""A stand-in Triton driver that launches nothing, so the project's own launchers can be run for a GPU that is not
here: their argument handling (block sizes, warps, constexpr flags) runs unchanged, and Triton's binder computes the
same specialisation and divisibility hints (integers equal to 1 folded, pointers and integers divisible by 16 marked)
as it would for a real launch, with the target's backend (AMD adds its buffer-range hints). Nothing is compiled
here: `capture_launches` records what each launch would have compiled, as a `Launch`, and aot_compile.py compiles it
for any target.

How: while capturing, the stand-in is Triton's active driver (it names the target; its device key is the target's
own, because Triton keeps its binder and in-memory kernel cache per device, not per target), and Triton's
`jit_cache_hook`, called just before a JIT function would compile, records the launch and answers "skip", so
`kernel[grid](...)` returns without compiling or launching. Tensors are CPU tensors: only their dtypes, shapes,
strides and data pointers' alignment reach the binder. TRITON_INTERPRET must be unset before the kernel modules are
imported, or their kernels are interpreter functions that never reach the hook (`require_compiled_kernels`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime.driver import driver


@dataclass(frozen=True)
class Launch:
    """What one `kernel[grid](...)` call would compile: enough to rebuild triton.compile's arguments anywhere."""

    module: str  # e.g. "tao_engine.kernels.rms_norm"
    kernel: str  # the JIT function's name in that module
    signature: dict[str, str]  # argument -> Triton type ("*bf16", "i32", "constexpr", ...)
    constants: dict[tuple[int, ...], Any]  # constexpr values (and integers folded because they equal 1)
    attrs: dict[tuple[int, ...], list[list[Any]]]  # divisibility / pointer-range hints per argument
    options: dict[str, Any]  # the backend's parsed options (num_warps, num_stages, ...), as JSON values

    def key(self) -> str:
        """Identity of the compiled kernel: two launches with equal keys compile to the same binary."""
        return json.dumps([self.module, self.kernel, self.signature, sorted(map(repr, self.constants.items())),
                           sorted(map(repr, self.attrs.items())), self.options], sort_keys=True, default=repr)

    def describe(self) -> str:
        """The constexprs by name, and the launch options that change the code, for the report."""
        names = list(self.signature)
        parts = []
        for path, value in sorted(self.constants.items()):
            name = names[path[0]]
            # A runtime integer argument lands here only when it equals 1: Triton folds it into the code.
            parts.append(f"{name}={value}" if self.signature[name] == "constexpr" else f"{name}=1(folded)")
        # Pointer element types in argument order, repeats dropped: the dtypes the launch was specialised for.
        dtypes = [t[1:] for t in self.signature.values() if t.startswith("*")]
        parts.append("dtypes=" + "/".join(d for i, d in enumerate(dtypes) if i == 0 or d != dtypes[i - 1]))
        # Arguments without a divisibility-by-16 hint (an odd size or stride, or a misaligned pointer).
        hinted = {path[0] for path, hints in self.attrs.items() if any(h[0] == "tt.divisibility" for h in hints)}
        unaligned = [name for i, (name, t) in enumerate(self.signature.items())
                     if t[0] in "*iu" and i not in hinted and (i,) not in self.constants]
        if unaligned:
            parts.append("unaligned=" + ",".join(unaligned))
        parts.append(f"warps={self.options['num_warps']} stages={self.options['num_stages']}")
        return " ".join(parts)


class StandInDriver(DriverBase):
    """The parts of Triton's driver interface that JIT binding reads; nothing that loads or launches a kernel."""

    def __init__(self, target: GPUTarget) -> None:
        super().__init__()
        self.target = target
        self.device = f"aot:{target.backend}:{target.arch}"  # Triton's per-device binder and cache, one per target

    @classmethod
    def is_active(cls) -> bool:  # never picked by Triton's driver discovery
        return False

    def map_python_to_cpp_type(self, ty: str) -> str:
        raise NotImplementedError("the stand-in driver builds no launcher")

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self):
        raise NotImplementedError("the stand-in driver runs nothing")

    def get_current_device(self) -> str:
        return self.device

    def get_current_stream(self, device: str) -> int:
        return 0


def require_compiled_kernels() -> None:
    """Fail early, naming the cause, when TRITON_INTERPRET is set: the kernels would be interpreter functions."""
    if knobs.runtime.interpret:
        raise RuntimeError("TRITON_INTERPRET is set: unset it before the kernel modules are imported "
                           f"(it is {os.environ.get('TRITON_INTERPRET')!r})")


def _launch_from_hook(fn: Any, compile: dict[str, Any]) -> Launch:
    options = json.loads(compile["specialization_data"])["options"]
    jit = fn.jit_function
    return Launch(module=jit.module, kernel=jit.fn.__name__, signature=dict(compile["signature"]),
                  constants=dict(compile["constants"]), attrs=dict(compile["configs"][0]), options=options)


@contextmanager
def capture_launches(target: GPUTarget) -> Iterator[list[Launch]]:
    """Within the block, every Triton JIT launch is recorded (appended to the yielded list) instead of compiled."""
    require_compiled_kernels()
    captured: list[Launch] = []

    def hook(*, key: Any, repr: str, fn: Any, compile: dict[str, Any], is_manual_warmup: bool,
             already_compiled: bool) -> bool:
        captured.append(_launch_from_hook(fn, compile))
        return True  # skip: nothing is compiled or launched

    # The driver active before: None until Triton first needs one (asking `driver.active` would create one, which
    # looks for a GPU and fails without), so it is read from the attribute `set_active` writes.
    previous = getattr(driver, "_active", None)
    driver.set_active(StandInDriver(target))
    try:
        with knobs.runtime.scope():
            knobs.runtime.jit_cache_hook = hook
            yield captured
    finally:
        driver.set_active(previous)
