"""`tao-engine doctor`: what this machine offers, which dtype `dtype="auto"` picks and why, whether the engine packs
its CPU linears (EngineConfig.pack_linears), and which backend each op will run."""

from __future__ import annotations

import importlib
import io
import platform

import torch

from tao_engine import __version__
from tao_engine.models.packed_weights import auto_packing
from tao_engine.ops import all_ops
from tao_engine.ops.extension import extension_status, load_extension
from tao_engine.precision import choose_dtype


def _triton_status() -> str:
    try:
        triton = importlib.import_module("triton")
    except ImportError as exc:
        return f"not installed ({exc})"
    return f"{triton.__version__}"


def report() -> str:
    out = io.StringIO()
    cuda = torch.cuda.is_available()
    print(f"tao_engine {__version__}  python {platform.python_version()}  {platform.machine()}", file=out)
    print(f"torch      {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})", file=out)
    if cuda:
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"CUDA       available: {names}", file=out)
    else:
        print("CUDA       not available", file=out)
    print(f"triton     {_triton_status()}", file=out)
    loaded, why = extension_status()
    ext = "loaded" if loaded else f"not loaded: {why}"
    if loaded:
        with_cuda = bool(getattr(load_extension(), "WITH_CUDA", False))
        ext += f" (CUDA kernels: {'yes' if with_cuda else 'no'})"
    print(f"_C         {ext}", file=out)
    for device in ["cpu"] + (["cuda"] if cuda else []):
        choice = choose_dtype(device)
        print(f"dtype auto {device}: {choice.name} ({choice.reason})", file=out)
    packing = auto_packing(choose_dtype("cpu").dtype)
    verdict = "packed" if packing.enabled else "not packed"
    print(f"linears cpu: {verdict} by the engine at the auto dtype ({packing.reason})", file=out)
    print("", file=out)
    devices = ["cpu"] + (["cuda"] if cuda else [])
    header = f"{'op':<26}{'backends (available?)':<44}" + "".join(f"{'runs on ' + d:<16}" for d in devices)
    print(header, file=out)
    print("-" * len(header), file=out)
    for name, op in sorted(all_ops().items()):
        states = ["torch:yes"] + [f"{b}:{'yes' if op.available(b)[0] else 'no'}" for b in op.backends]
        print(f"{name:<26}{' '.join(states):<44}" + "".join(f"{op.describe(d):<16}" for d in devices), file=out)
    unavailable = [
        f"  {name}.{b}: {op.available(b)[1]}" for name, op in sorted(all_ops().items()) for b in op.backends
        if not op.available(b)[0]
    ]
    if unavailable:
        print("\nwhy a backend is unavailable:", file=out)
        print("\n".join(unavailable), file=out)
    return out.getvalue()
