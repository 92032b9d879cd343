"""Capture and restore every random number generator a run draws from, for exact resume.

Global torch CPU RNG, CUDA RNGs (when CUDA is already initialised), Python's `random`, numpy's legacy global RNG,
and any named `torch.Generator`s the caller owns (the engine's sampling generator, a data-shuffling one, ...). The
state holds only tensors, lists, numbers and strings, so `torch.load(..., weights_only=True)` reads it back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # never initialise CUDA just to save nothing
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Set every RNG back to `state`. The names of `generators` must equal the saved ones."""
    generators = dict(generators or {})
    saved = state["generators"]
    if set(saved) != set(generators):
        raise ValueError(
            f"restore_rng_state: the checkpoint holds generators {sorted(saved)} but {sorted(generators)} were "
            "passed; pass the same named torch.Generators that were saved"
        )
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    for name, g in generators.items():
        g.set_state(saved[name])
    if "cuda" in state:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(state["cuda"]):
            raise ValueError(
                f"restore_rng_state: the checkpoint holds {len(state['cuda'])} CUDA RNG states but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA devices; resume on the same "
                "device count for an exact continuation"
            )
        torch.cuda.set_rng_state_all(state["cuda"])
