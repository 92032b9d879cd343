"""FSDP2 sharding of the one module that generates and trains (`[distributed] strategy = "fsdp2"`).

Every decoder layer is its own `fully_shard` unit and the root unit holds the rest (embedding, final norm, LM head,
tied or not): each rank keeps 1/world of every parameter, gradient and optimizer state, which is what lets a model
train whose AdamW state does not fit one device.

Three regimes, so that the engine still samples from the very module the trainer updates (no copy, no sync step):
- training forwards and backwards: FSDP2's own hooks all-gather a unit's parameters before its forward and
  reduce-scatter its gradients after its backward. The root unit is not resharded after the forward, so the fused
  log-prob op reads the LM head's full weight after `model(...)` returns (`completion_logprobs` reads it there), and
  its gradient is reduce-scattered by FSDP2's end-of-backward callback. Gradients are summed across ranks (divide
  factor 1, the DDP path's semantics: `train_step` already weights each micro-batch by its share of the global
  batch). Every rank must run the same number of forwards and backwards: `train_step` pads with idle micro-steps.
- generation, scoring, evaluation and no-grad log-probs: `full_weights(model)` gathers every unit once and keeps the
  full parameters until the block ends, so ranks may run any number of forwards with no collective in between
  (each rank's engine generates its own prompts for as many steps as they need).
- checkpoints: `full_state_dict` gathers full tensors onto rank 0, which writes the same files as a single process
  or a DDP run; `shard_like` turns a file's full tensor back into this rank's shard, so checkpoints load at any world
  size and with either strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tao_engine.distributed.context import DistributedContext
from tao_engine.distributed.exchange import exchange


def shard_model(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """Apply FSDP2 in place: one unit per decoder layer, the root unit for the rest. Returns `model`."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(
            f"[distributed] strategy = 'fsdp2' shards tao_engine decoders (model.model.layers); got "
            f"{type(model).__name__}"
        )
    mesh = init_device_mesh(torch.device(ctx.device).type, (ctx.world_size,))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # a sum across ranks, as the ddp strategy's all-reduce
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM; nccl is as fast with SUM
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _units(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]  # the same order on every rank


@contextmanager
def full_weights(model: nn.Module, ctx: DistributedContext, phase: str) -> Iterator[nn.Module]:
    """Inside the block `model` holds its full parameters (plain tensors) and its forwards are local: no collective,
    however many each rank runs. Every rank enters together (one health exchange, then one all-gather per unit); the
    shards are the source of truth again on exit, so in-place changes to the full weights inside are dropped."""
    if not is_sharded(model):
        yield model
        return
    exchange(ctx, None, f"{phase}: gather the full weights")  # a failed rank stops the others before the all-gather
    units = _units(model)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)  # forwards must not free what generation reads
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(unit is not model, recurse=False)  # FSDP2's defaults: root stays full


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: nn.Module, ctx: DistributedContext,
                    only: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict with full CPU tensors, on rank 0 ({} elsewhere); `only(name)` keeps a subset (e.g. the
    LoRA adapters of a checkpoint). Every rank must call it (one all-gather per kept tensor, in state-dict order); a
    tensor shared by two names (a tied head) is gathered once."""
    out: dict[str, torch.Tensor] = {}
    gathered: dict[int, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if only is not None and not only(name):
            continue
        key = id(tensor)
        if key not in gathered:
            full = _full(tensor).detach()
            gathered[key] = full.cpu() if ctx.is_main else full[:0]  # other ranks keep nothing
        if ctx.is_main:
            out[name] = gathered[key]
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer, ctx: DistributedContext) -> dict[str, Any]:
    """`optimizer.state_dict()` with full CPU tensors in place of shards, on rank 0 ({} elsewhere): the file a single
    process would write. Every rank must call it."""
    state = optimizer.state_dict()
    full_state: dict[int, dict[str, Any]] = {}
    for index in sorted(state["state"]):  # param indices: the same on every rank
        full_state[index] = {}
        for key, value in state["state"][index].items():
            value = _full(value) if isinstance(value, torch.Tensor) else value
            full_state[index][key] = value.cpu() if isinstance(value, torch.Tensor) else value
    return {"state": full_state, "param_groups": state["param_groups"]} if ctx.is_main else {}


def shard_like(target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """A full tensor read from a checkpoint, placed like `target`: this rank's shard (a DTensor) when `target` is
    sharded, else `full` as it is. Local slicing, no collective: every rank reads the same file."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(target, DTensor):
        return full
    if tuple(full.shape) != tuple(target.shape):
        raise ValueError(f"checkpoint tensor has shape {tuple(full.shape)}, the model's is {tuple(target.shape)}")
    return distribute_tensor(full.to(device=target.device, dtype=target.dtype), target.device_mesh,
                             target.placements, src_data_rank=None)


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> dict[str, Any]:
    """A full `optimizer.state_dict()` (from a checkpoint) with every per-parameter tensor of the parameter's shape
    turned into this rank's shard, ready for `optimizer.load_state_dict`."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    out: dict[int, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        param = params[int(index)]
        out[index] = {
            key: shard_like(param, value)
            if isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(param.shape) else value
            for key, value in entry.items()
        }
    return {"state": out, "param_groups": state["param_groups"]}
