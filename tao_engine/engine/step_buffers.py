"""Host tensors reused by every engine step instead of ~13 fresh `torch.tensor(list)` per step.

The runner and the sampler each fill their own named buffers (token ids, positions, slots, block tables, context
lengths; the sampling parameters) through numpy views and hand out slices. A slice is valid until the same name is
filled again, i.e. for one step: everything that reads it (the forward, `ops.sample`) runs within that step. On a
CUDA device the slice is copied over synchronously (pageable memory), so the next step may overwrite the buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class StepBuffers:
    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._host: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
        held = self._host.get(name)
        have = held[0].shape if held is not None and held[0].dtype == dtype else (0,) * len(shape)
        if any(h < want for h, want in zip(have, shape, strict=True)):
            # Grown geometrically, so a batch that creeps up reallocates a handful of times in all.
            host = torch.zeros(tuple(max(want, 2 * h) for h, want in zip(have, shape, strict=True)), dtype=dtype)
            held = (host, host.numpy())
            self._host[name] = held
        return held

    def _out(self, view: torch.Tensor) -> torch.Tensor:
        return view if self.device.type == "cpu" else view.to(self.device)

    def vector(self, name: str, values: Sequence[int] | Sequence[float], dtype: torch.dtype) -> torch.Tensor:
        """values [n] as a tensor of `dtype` on the device (a slice of buffer `name`)."""
        n = len(values)
        host, array = self._buffer(name, (max(n, 1),), dtype)
        array[:n] = values
        return self._out(host[:n])

    def table(self, name: str, rows: Sequence[Sequence[int]], dtype: torch.dtype) -> torch.Tensor:
        """Ragged rows as a [len(rows), longest] tensor, each row padded with zeros."""
        width = max((len(r) for r in rows), default=0)
        host, array = self._buffer(name, (max(len(rows), 1), max(width, 1)), dtype)
        block = array[: len(rows), :width]
        block.fill(0)
        for i, row in enumerate(rows):
            block[i, : len(row)] = row
        return self._out(host[: len(rows), :width])
