"""Backend resolution: explicit requests run or raise, automatic resolution falls back quietly."""

from __future__ import annotations

import pytest
import torch

from tao_engine.ops.registry import BackendUnavailableError, Op, use_backend


def _op(probe_ok: bool = True, supports_ok: bool = True) -> tuple[Op, list[str]]:
    calls: list[str] = []

    def reference(x: torch.Tensor) -> torch.Tensor:
        calls.append("torch")
        return x + 1

    def fake_cpp(a) -> torch.Tensor:  # a backend reads the call's arguments bound to the reference's signature
        calls.append("cpp")
        return a.x + 1

    op = Op("toy", reference)
    op.register(
        "cpp",
        fake_cpp,
        probe=lambda: (probe_ok, "probe says no"),
        supports=lambda a: (supports_ok and a.x.dtype == torch.float32, "only float32"),
    )
    return op, calls


def test_auto_prefers_available_backend_and_falls_back_on_dtype():
    op, calls = _op()
    x = torch.randn(3)
    assert torch.equal(op(x), x + 1)
    op(x.double())
    assert calls == ["cpp", "torch"]


def test_auto_falls_back_when_probe_fails():
    op, calls = _op(probe_ok=False)
    op(torch.randn(2))
    assert calls == ["torch"]


def test_explicit_backend_raises_with_reason():
    op, _ = _op(probe_ok=False)
    with pytest.raises(BackendUnavailableError, match="probe says no"):
        op(torch.randn(2), backend="cpp")
    op2, _ = _op()
    with pytest.raises(BackendUnavailableError, match="only float32"):
        op2(torch.randn(2).double(), backend="cpp")
    with pytest.raises(BackendUnavailableError, match="no 'triton' backend"):
        op2(torch.randn(2), backend="triton")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'cuda2'"):
        op2(torch.randn(2), backend="cuda2")


def test_scoped_backend_and_env(monkeypatch):
    op, calls = _op()
    x = torch.randn(2)
    with use_backend("torch"):
        op(x)
    assert calls == ["torch"]
    # An op without the scoped backend runs its reference; one with it must run it.
    with use_backend("triton"):
        op(x)
    assert calls[-1] == "torch"
    monkeypatch.setenv("TAO_BACKEND", "cpp")
    op(x)
    assert calls[-1] == "cpp"
    with pytest.raises(BackendUnavailableError, match="only float32"):
        op(x.double())


def test_register_rejects_bad_names():
    op, _ = _op()
    with pytest.raises(ValueError, match="already registered"):
        op.register("cpp", lambda x: x, probe=lambda: (True, ""))
    with pytest.raises(ValueError, match="backend name"):
        op.register("torch", lambda x: x, probe=lambda: (True, ""))
    with pytest.raises(ValueError, match="unknown backend"), use_backend("fast"):
        op(torch.randn(1))


def test_arguments_are_bound_once_with_defaults():
    seen = []

    def reference(x: torch.Tensor, scale: float = 2.0, *, shift: float = 0.0) -> torch.Tensor:
        return x * scale + shift

    op = Op("toy3", reference)
    op.register("cpp", lambda a: seen.append(a) or a.x * a.scale + a.shift, probe=lambda: (True, ""))
    x = torch.randn(3)
    assert torch.equal(op(x), x * 2.0)
    assert torch.equal(op(x, shift=1.0), x * 2.0 + 1.0)
    assert [tuple(a[1:]) for a in seen] == [(2.0, 0.0), (2.0, 1.0)]
    with pytest.raises(TypeError, match="missing required argument 'x'"):
        op()
    with pytest.raises(TypeError, match="positional"):
        op(x, 2.0, 1.0)
    with pytest.raises(TypeError, match="unexpected"):
        op(x, bias=1.0)


def test_probe_runs_once():
    count = []
    op = Op("toy2", lambda x: x)
    op.register("cpp", lambda x: x, probe=lambda: (count.append(1) or True, ""))
    for _ in range(5):
        op(torch.randn(1))
    assert len(count) == 1


def test_dispatch_traces_under_torch_compile_fullgraph():
    """Ops called through the registry compile as one graph (the backend is chosen at trace time)."""
    from tao_engine import ops

    def loss(logits: torch.Tensor, targets: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return ops.token_logprobs(logits, targets).sum() + ops.rms_norm(x, w, 1e-6).sum()

    logits, targets = torch.randn(5, 33), torch.randint(0, 33, (5,))
    x, w = torch.randn(3, 7), torch.randn(7)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    # aot_eager runs the very kernels eager mode runs, on the same machine: bit for bit the same.
    eager = loss(logits, targets, x, w)
    assert torch.equal(compiled(logits, targets, x, w), eager)
    # The backend was chosen when the function was traced (registry docstring): a later scope does not reach it, so
    # the compiled function still runs what eager mode ran outside the scope. (Comparing with eager mode inside the
    # scope, the torch reference, held only where the two backends happened to round alike: 3 seeds in 16 did not.)
    with use_backend("torch"):
        assert torch.equal(compiled(logits, targets, x, w), eager)
