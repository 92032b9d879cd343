"""A linear layer's weight kept a second time, fused and prepacked for oneDNN: the engine's CPU decode GEMMs.

`F.linear` on a bf16 CPU weight hands oneDNN a plain [out, in] matrix, which it reorders into its AMX/VNNI blocked
layout on every call; at decode sizes (64 rows) that reorder costs as much as the multiply. A `PackedLinear` does the
reorder once (`torch.ops.mkldnn._reorder_linear_weight`) and multiplies with `torch.ops.mkldnn._linear_pointwise`,
which gives the same values as `F.linear` (the same oneDNN kernel, without the per-call reorder). Weights that one
input feeds are also joined into one matrix (q|k|v, gate|up), so a step runs 4 GEMMs a layer instead of 7.

Measured (2-core Xeon with AMX, bf16, SmolLM2-135M's 211 decode GEMMs at batch 64 streamed from memory): 46.6 ms
with F.linear, 38.4 ms joined, 26.2 ms joined and packed; in fp32 ~8% less. With the packed weights a decode step
runs each layer as one C++ op (ops.decode_layer), which is where fp32 gains most (a step 1.19x faster).

The packed copy is a cache of the module's weights, never their owner: `tao_engine.models.packed_weights` rebuilds
an entry when a source weight changes (an optimizer step, `p.data = ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


class PackedLinear:
    """y = x @ cat(weights).T + cat(biases) with the joined weight prepacked once; x [..., in] -> y [..., sum(out)]."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor | None], batch_hint: int) -> None:
        if any(b is None for b in biases) and any(b is not None for b in biases):
            raise ValueError("PackedLinear: join linears that all have a bias or none")
        with torch.no_grad():
            weight = weights[0].detach() if len(weights) == 1 else torch.cat([w.detach() for w in weights])  # [O, I]
            bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])  # [O]
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)  # opaque oneDNN layout
        self.bias = bias
        self.out_features, self.in_features = weight.shape
        bias_bytes = 0 if bias is None else bias.numel() * bias.element_size()
        self.nbytes = weight.numel() * weight.element_size() + bias_bytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # [..., in] -> [..., out]; oneDNN takes 2-D inputs
        rows = x.reshape(-1, self.in_features)
        y = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


@dataclass(frozen=True)
class LayerLinears:
    """One decoder layer's projections, packed: q|k|v and gate|up joined, o and down alone; `weights` and `biases` in
    that order, as ops.decode_layer takes them."""

    qkv: PackedLinear  # [N, H] -> [N, (Hq + 2 Hkv) D]
    o: PackedLinear  # [N, Hq D] -> [N, H]
    gate_up: PackedLinear  # [N, H] -> [N, 2 I]
    down: PackedLinear  # [N, I] -> [N, H]

    @cached_property
    def weights(self) -> list[torch.Tensor]:
        return [lin.weight for lin in (self.qkv, self.o, self.gate_up, self.down)]

    @cached_property
    def biases(self) -> list[torch.Tensor | None]:
        return [lin.bias for lin in (self.qkv, self.o, self.gate_up, self.down)]
