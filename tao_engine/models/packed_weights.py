"""The engine's packed copy of a decoder's linear weights (see tao_engine/layers/packed_linear.py), kept in step with
the module: the module stays the one owner of the weights (the trainer updates it in place, no weight sync), and an
entry is packed again as soon as one of its source tensors changes.

Change detection: every in-place write bumps a tensor's version counter (an optimizer step), `p.data = ...` swaps
its storage (data_ptr), and `load_state_dict(assign=True)` or `module.weight = ...` replaces the tensor itself.
`refresh()` (each engine step, ~90 us for SmolLM2's 211 weights) sees the first two on the tensors it packed;
`sync()` also re-reads the modules to see the third, and a projection wrapped by an adapter (when the engine starts
work from idle and on `Engine.weights_updated()`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tao_engine.layers.packed_linear import LayerLinears, PackedLinear
from tao_engine.models.decoder import DecoderForCausalLM

PACKED_DTYPES = (torch.bfloat16, torch.float32)
# pack_linears=None packs only while the copy takes at most this share of the memory available when the engine
# starts (a 1.5B fp32 model's linears are ~6 GB): the speed-up must not be what runs a machine out of memory.
MAX_AUTO_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class PackingChoice:
    enabled: bool
    reason: str


def choose_packing(requested: bool | None, model: nn.Module, compile_decode: bool,
                   available_bytes: int | None = None) -> PackingChoice:
    """What `EngineConfig.pack_linears` means for this model: None packs where it can (CPU bf16/fp32 weights with
    oneDNN, eager decode) and the copy fits in MAX_AUTO_MEMORY_SHARE of `available_bytes` (None: not known, not
    checked), True packs or raises naming why it cannot, False never packs."""
    blocker = _packing_blocker(model)
    if requested is True:
        if blocker is not None:
            raise ValueError(f"EngineConfig.pack_linears=True: {blocker}; set pack_linears to None or False")
        if compile_decode:
            raise ValueError("EngineConfig.pack_linears=True with compile_decode=True: the compiled decode graph "
                             "runs the module's own weights; choose one of the two")
        return PackingChoice(True, "asked for (pack_linears=True)")
    if requested is False:
        return PackingChoice(False, "pack_linears=False")
    if blocker is not None:
        return PackingChoice(False, blocker)
    if compile_decode:
        return PackingChoice(False, "compile_decode runs the module's own weights")
    copy_bytes = linear_weight_bytes(model)
    if available_bytes is not None and copy_bytes > MAX_AUTO_MEMORY_SHARE * available_bytes:
        share, available = f"{MAX_AUTO_MEMORY_SHARE:.0%}", f"{available_bytes / 2**30:.2f} GiB"
        return PackingChoice(False, f"the packed copy ({copy_bytes / 2**30:.2f} GiB) would take more than {share} "
                             f"of the memory available ({available}); pack_linears=True packs anyway")
    return auto_packing(next(model.parameters()).dtype)


def linear_weight_bytes(model: DecoderForCausalLM) -> int:
    """Bytes of every projection's weight and bias, the LM head included: the size of the packed copy."""
    tensors = [t for _, m in _projections(model) for t in (m.weight, m.bias) if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def auto_packing(dtype: torch.dtype) -> PackingChoice:
    """What pack_linears=None does for a plain decoder of `dtype` on this machine's CPU (eager decode)."""
    blocker = _dtype_blocker(dtype)
    if blocker is not None:
        return PackingChoice(False, blocker)
    return PackingChoice(True, f"{str(dtype).removeprefix('torch.')} CPU weights: oneDNN's per-call weight reorder "
                         "skipped, q|k|v and gate|up joined, each decode layer one C++ op")


def _dtype_blocker(dtype: torch.dtype) -> str | None:
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn)"
    if dtype not in PACKED_DTYPES:
        return f"{dtype} weights: oneDNN packing covers bfloat16 and float32"
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no oneDNN bf16 support (AVX-512 BW or newer)"
    return None


def _packing_blocker(model: nn.Module) -> str | None:
    """Why this model's linears cannot be packed, or None."""
    if not isinstance(model, DecoderForCausalLM):
        return f"packing knows the tao_engine decoder only, got {type(model).__name__}"
    weight = model.lm_head.weight
    for name, module in _projections(model):
        if type(module) is not nn.Linear:
            return f"{name} is a {type(module).__name__}, not a plain nn.Linear (an adapter or a quantized layer)"
        w = module.weight
        if w.device.type != "cpu" or type(w.data) is not torch.Tensor:
            return f"{name}.weight is a {type(w.data).__name__} on {w.device}: packing is for plain CPU tensors"
        if w.dtype != weight.dtype:
            return f"{name}.weight is {w.dtype} while lm_head.weight is {weight.dtype}: packing needs one dtype"
    blocker = _dtype_blocker(weight.dtype)
    if blocker is not None:
        return blocker
    if weight.is_inference():
        return "inference-mode weights carry no version counter, so updates could not be seen"
    return None


def _named_groups(model: DecoderForCausalLM) -> list[tuple[tuple[str, nn.Module], ...]]:
    """The (name, module) pairs each packed matrix joins, in entry order: per layer q|k|v, o, gate|up, down; then the
    LM head."""
    groups: list[tuple[tuple[str, nn.Module], ...]] = []
    for i, layer in enumerate(model.model.layers):
        attn, mlp, at = layer.self_attn, layer.mlp, f"model.layers.{i}."
        groups += [
            ((at + "self_attn.q_proj", attn.q_proj), (at + "self_attn.k_proj", attn.k_proj),
             (at + "self_attn.v_proj", attn.v_proj)),
            ((at + "self_attn.o_proj", attn.o_proj),),
            ((at + "mlp.gate_proj", mlp.gate_proj), (at + "mlp.up_proj", mlp.up_proj)),
            ((at + "mlp.down_proj", mlp.down_proj),),
        ]
    return groups + [(("lm_head", model.lm_head),)]


def _projections(model: DecoderForCausalLM) -> list[tuple[str, nn.Module]]:
    return [pair for group in _named_groups(model) for pair in group]


class _Entry:
    """One packed matrix and the (weight, bias) pairs of the modules it was packed from."""

    def __init__(self, batch_hint: int) -> None:
        self.batch_hint = batch_hint
        self.sources: tuple[tuple[torch.Tensor, torch.Tensor | None], ...] = ()
        self.stamp: tuple[int, ...] = ()
        self.packed: PackedLinear | None = None

    def pack(self, sources: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]) -> None:
        self.packed = PackedLinear([w for w, _ in sources], [b for _, b in sources], self.batch_hint)
        self.sources, self.stamp = sources, _stamp(sources)


def _stamp(sources: tuple[tuple[torch.Tensor, torch.Tensor | None], ...]) -> tuple[int, ...]:
    return tuple(v for pair in sources for t in pair if t is not None for v in (t._version, t.data_ptr()))


class PackedDecoderWeights:
    """`layers[i]`: layer i's LayerLinears; `head`: the LM head. Build with `choose_packing` saying yes.

    `active` turns False when `sync()` finds the model no longer packable (an adapter wrapped a projection after the
    engine started): the engine then runs the modules' own weights, and turns back when a later sync can pack again.
    """

    def __init__(self, model: DecoderForCausalLM, batch_hint: int) -> None:
        blocker = _packing_blocker(model)
        if blocker is not None:
            raise ValueError(f"PackedDecoderWeights: {blocker}")
        self.model = model
        self.batch_hint = batch_hint
        self.blocker: str | None = None  # why the copy is not in use now
        self._entries: list[_Entry] = []
        self.layers: list[LayerLinears] = []
        self.head: PackedLinear | None = None
        self._sources: tuple[tuple[torch.Tensor, torch.Tensor | None], ...] = ()
        self._stamp: tuple[int, ...] = ()
        self.sync()

    @property
    def active(self) -> bool:
        return self.blocker is None

    @property
    def nbytes(self) -> int:
        """Bytes of the packed copy (the module's own weights not counted)."""
        return sum(e.packed.nbytes for e in self._entries if e.packed is not None)

    @torch.no_grad()
    def sync(self) -> int:
        """Re-read the model's projection modules and their weight and bias tensors and repack what changed, replaced
        modules and tensors included; returns how many matrices were packed again. A model that can no longer be
        packed drops the copy (`active` False, `blocker` says why)."""
        self.blocker = _packing_blocker(self.model)
        if self.blocker is not None:
            self._entries, self.layers, self.head, self._sources, self._stamp = [], [], None, (), ()
            return 0
        groups = [tuple(m for _, m in group) for group in _named_groups(self.model)]
        if len(self._entries) != len(groups):
            self._entries = [_Entry(self.batch_hint) for _ in groups]
        repacked = 0
        for entry, modules in zip(self._entries, groups, strict=True):
            sources = tuple((m.weight, m.bias) for m in modules)
            same = len(sources) == len(entry.sources) and all(
                a is b for new, old in zip(sources, entry.sources, strict=True) for a, b in zip(new, old, strict=True))
            if not same or _stamp(sources) != entry.stamp:
                entry.pack(sources)
                repacked += 1
        if repacked:
            self._publish()
        return repacked

    @torch.no_grad()
    def refresh(self) -> int:
        """Repack the matrices whose packed-from tensors were written in place or had their storage swapped; returns
        how many. Cheap enough for every step; a module or tensor replaced on the model needs `sync()`."""
        if not self.active or _stamp(self._sources) == self._stamp:  # the common case: one pass, ~90 us
            return 0
        repacked = 0
        for entry in self._entries:
            if _stamp(entry.sources) != entry.stamp:
                entry.pack(entry.sources)
                repacked += 1
        self._publish()
        return repacked

    def _publish(self) -> None:
        packed = [e.packed for e in self._entries]
        self.layers = [LayerLinears(*packed[i:i + 4]) for i in range(0, len(packed) - 1, 4)]
        self.head = packed[-1]
        self._sources = tuple(pair for e in self._entries for pair in e.sources)
        self._stamp = _stamp(self._sources)
