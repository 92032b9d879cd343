"""Backend registry and resolution for every op (DESIGN.md section 2).

An op is a torch reference (the specification) plus optional backends (`cpp`, `cuda`, `triton`). Each backend has a
probe, run once and cached, that says whether it can run on this machine at all, and a cheap per-call `supports`
that says whether it handles these particular tensors (device, dtype, shape).

Resolution order for one call:
1. `backend=` passed to the op;
2. the innermost `with use_backend(name):` scope (a context variable, so threads and tasks do not leak into each
   other), then the `TAO_BACKEND` environment variable; an op that has no backend of that name runs its reference;
3. otherwise the op's preference order for the tensors' device, falling back quietly to the reference.

An explicitly requested backend must run or raise `BackendUnavailableError` saying why; only automatic resolution
falls back. Under `torch.compile` the choice is made once, when the function is traced: a later change of scope or
TAO_BACKEND does not reach an already compiled function.

The reference's signature is the op's one signature: each call is bound to it once, defaults applied, into the op's
`Args` (a named tuple), and every backend's `supports(args)` and `fn(args)` read that object. The reference itself
runs with the call's own arguments.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import inspect
import os
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

REFERENCE = "torch"
KNOWN_BACKENDS = ("torch", "cpp", "cuda", "triton", "flash_attn")  # flash_attn: attention ops only, when asked

# Default preference per device type; an op may override it.
DEFAULT_PREFERENCE = {
    "cpu": ("cpp", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}

_MISSING = object()  # a parameter without a default

_requested_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("tao_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run this call."""


@dataclass(frozen=True)
class Backend:
    name: str
    # Runs the op on the call's arguments bound to the reference's signature (the op's `Args`).
    fn: Callable[[Any], Any]
    # Whether the backend can run on this machine at all (imports, compiled extension, device). Called once.
    probe: Callable[[], tuple[bool, str]]
    # Whether these bound arguments are handled: returns (ok, reason). Must be cheap: it runs on every call.
    supports: Callable[[Any], tuple[bool, str]]


@dataclass(frozen=True)
class CompiledRegistration:
    """The fake kernel (and autograd formula) of one op of `tao_engine._C`, applied once the extension loads: the
    op does not exist in torch.ops before that."""

    qualname: str
    fake: Callable[..., Any]
    backward: Callable[..., Any] | None = None
    setup_context: Callable[..., Any] | None = None

    def apply(self) -> None:
        torch.library.register_fake(self.qualname)(self.fake)
        if self.backward is not None:
            torch.library.register_autograd(self.qualname, self.backward, setup_context=self.setup_context)


@dataclass(eq=False)
class Op:
    """One op: its torch reference and the backends registered for it."""

    name: str
    reference: Callable[..., Any]
    preference: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PREFERENCE))
    backends: dict[str, Backend] = field(default_factory=dict)
    compiled: list[CompiledRegistration] = field(default_factory=list)

    def __post_init__(self) -> None:
        _LIVE_OPS[id(self)] = self
        params = inspect.signature(self.reference).parameters.values()
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            raise ValueError(f"op {self.name!r}: its reference must name every parameter (no *args or **kwargs)")
        self.Args = collections.namedtuple(f"{self.name}_args", [p.name for p in params])  # type: ignore[misc]
        self._params = tuple((p.name, _MISSING if p.default is p.empty else p.default) for p in params)
        self._max_positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        # The common call passes every argument positionally; keyword-only parameters rule that shortcut out.
        self._fast_arity = len(self._params) if self._max_positional == len(self._params) else -1

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The call's arguments as the op's `Args`, defaults applied. Hand-written: inspect.Signature.bind costs
        several microseconds, and ops run per layer per decode step."""
        if not kwargs and len(args) == self._fast_arity:
            return self.Args(*args)
        if len(args) > self._max_positional:
            raise TypeError(f"{self.name}() takes {self._max_positional} positional arguments, got {len(args)}")
        values, used = list(args), 0
        for name, default in self._params[len(args) :]:
            if name in kwargs:
                values.append(kwargs[name])
                used += 1
            elif default is _MISSING:
                raise TypeError(f"{self.name}() missing required argument {name!r}")
            else:
                values.append(default)
        if used != len(kwargs):
            bad = sorted(set(kwargs) - set(self.Args._fields[len(args) :]))
            raise TypeError(f"{self.name}() got unexpected or repeated keyword arguments {bad}")
        return self.Args(*values)

    def register_compiled(
        self,
        qualname: str,
        fake: Callable[..., Any],
        backward: Callable[..., Any] | None = None,
        setup_context: Callable[..., Any] | None = None,
    ) -> None:
        """A fake kernel (and autograd formula) of a `tao_engine._C` op behind this op; `extension` applies it."""
        self.compiled.append(CompiledRegistration(qualname, fake, backward, setup_context))

    def register(
        self,
        name: str,
        fn: Callable[[Any], Any],
        probe: Callable[[], tuple[bool, str]],
        supports: Callable[[Any], tuple[bool, str]] | None = None,
    ) -> None:
        if name not in KNOWN_BACKENDS or name == REFERENCE:
            raise ValueError(f"op {self.name!r}: backend name must be one of {KNOWN_BACKENDS[1:]}, got {name!r}")
        if name in self.backends:
            raise ValueError(f"op {self.name!r}: backend {name!r} is already registered")
        self.backends[name] = Backend(name, fn, functools.cache(probe), supports or _supports_all)

    def available(self, name: str) -> tuple[bool, str]:
        """Whether backend `name` can run on this machine (probe only, no arguments)."""
        if name == REFERENCE:
            return True, "reference implementation"
        backend = self.backends.get(name)
        if backend is None:
            return False, f"op {self.name!r} has no {name!r} backend"
        return backend.probe()

    def resolve(self, device_type: str, backend: str | None, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        """The function one call runs: a backend's `fn` or the reference."""
        return self._resolve(device_type, backend, self.bind(args, kwargs))

    def _resolve(self, device_type: str, backend: str | None, bound: Any) -> Callable[..., Any]:
        if backend is not None:
            return self._explicit(backend, bound)
        scoped = _scoped_backend() or None
        # A scope or TAO_BACKEND names one backend for a whole model; ops that have no such backend at all run
        # their reference, while ops that do have it must run it or raise.
        if scoped is not None:
            if scoped in KNOWN_BACKENDS and scoped != REFERENCE and scoped not in self.backends:
                return self.reference
            return self._explicit(scoped, bound)
        for name in self.preference.get(device_type, (REFERENCE,)):
            if name == REFERENCE:
                return self.reference
            chosen = self.backends.get(name)
            if chosen is None or not _probe_ok(self, name):
                continue
            if chosen.supports(bound)[0]:
                return chosen.fn
        return self.reference

    def _explicit(self, name: str, bound: Any) -> Callable[..., Any]:
        if name not in KNOWN_BACKENDS:
            raise BackendUnavailableError(
                f"op {self.name!r}: unknown backend {name!r} (from backend=, use_backend() or TAO_BACKEND); "
                f"choose one of {KNOWN_BACKENDS}"
            )
        if name == REFERENCE:
            return self.reference
        ok, why = self.available(name)
        if not ok:
            raise BackendUnavailableError(f"op {self.name!r}: backend {name!r} is not available: {why}")
        chosen = self.backends[name]
        ok, why = chosen.supports(bound)
        if not ok:
            raise BackendUnavailableError(f"op {self.name!r}: backend {name!r} does not support this call: {why}")
        return chosen.fn

    def __call__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
        bound = self.bind(args, kwargs)
        fn = self._resolve(_first_tensor_device(bound), backend, bound)
        return fn(*args, **kwargs) if fn is self.reference else fn(bound)

    def describe(self, device_type: str) -> str:
        """Name of the backend automatic resolution would try first on `device_type` (used by `doctor`)."""
        for name in self.preference.get(device_type, (REFERENCE,)):
            if self.available(name)[0]:
                return name
        return REFERENCE


# Resolution must also work while torch.compile traces a model: dynamo cannot trace ContextVar.get or the imports a
# probe does, so these two facts are read through functions whose result dynamo takes as a constant of the trace.
# They are marked as `torch.compiler.assume_constant_result` marks a function; that decorator itself would import
# torch._dynamo (and with it triton) at `import tao_engine`, which DESIGN.md rules out, so the mark is set directly.
# tests/ops/test_registry.py compiles through the registry with fullgraph=True and fails if the mark stops working.
def _assume_constant_result(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


@_assume_constant_result
def _scoped_backend() -> str:
    return _requested_backend.get() or os.environ.get("TAO_BACKEND") or ""


def _probe_ok(op: Op, name: str) -> bool:
    if torch.compiler.is_compiling():
        return _probe_ok_constant(id(op), name)
    return op.backends[name].probe()[0]


@_assume_constant_result
def _probe_ok_constant(op_id: int, name: str) -> bool:
    return _LIVE_OPS[op_id].backends[name].probe()[0]


# Every Op by id, so that the constant-result probe above takes only constant arguments (ints and strings).
_LIVE_OPS: weakref.WeakValueDictionary[int, Op] = weakref.WeakValueDictionary()


def _supports_all(bound: Any) -> tuple[bool, str]:
    return True, ""


def _first_tensor_device(bound: tuple[Any, ...]) -> str:
    for value in bound:
        if isinstance(value, torch.Tensor):
            return value.device.type
    return "cpu"


_OPS: dict[str, Op] = {}


def define_op(name: str, reference: Callable[..., Any], preference: dict[str, tuple[str, ...]] | None = None) -> Op:
    """Create an op. Called once per op at import of its module in `tao_engine.ops`."""
    if name in _OPS:
        raise ValueError(f"op {name!r} is already defined")
    op = Op(name, reference, dict(preference or DEFAULT_PREFERENCE))
    _OPS[name] = op
    return op


def all_ops() -> dict[str, Op]:
    return dict(_OPS)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run every op in this scope on backend `name` (or raise if it cannot)."""
    if name not in KNOWN_BACKENDS:
        raise ValueError(f"use_backend: unknown backend {name!r}; choose one of {KNOWN_BACKENDS}")
    token = _requested_backend.set(name)
    try:
        yield
    finally:
        _requested_backend.reset(token)
