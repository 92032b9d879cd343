"""fp32 master weights for the trainable parameters of a bf16/fp16 model (what `dtype="auto"` loads on a CPU with
native bf16).

The engine generates from the module's own low-precision weights (no copy per step); the optimizer updates fp32
masters instead, because an AdamW step of lr 1e-6 is far below bf16's resolution (2^-8 of the weight) and would be
rounded away. Wiring, all through torch's hook APIs:
- each low-precision parameter gets a post-accumulate-grad hook that adds its gradient into its master's fp32
  gradient and frees its own, so micro-batch gradients also accumulate in fp32;
- the optimizer (built over the masters) gets a step post-hook that writes the updated masters back into the
  module's parameters, rounded once: the engine's very next generation sees the update;
- its state dict carries the masters, so a resumed run continues from the exact fp32 values.
fp32 parameters (LoRA adapters, a float32 model) are their own masters: nothing changes for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

STATE_KEY = "fp32_master_weights"


class MasterWeights:
    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        # (module parameter, its fp32 master) for every low-precision parameter, in the given order.
        self.pairs: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._master_of: dict[int, torch.Tensor] = {}
        for p in params:
            if p.dtype in (torch.bfloat16, torch.float16) and not _is_distributed(p):
                master = nn.Parameter(p.detach().float().clone())  # [same shape] fp32
                self.pairs.append((p, master))
                self._master_of[id(p)] = master
        self._hooks: list[Any] = []

    def master(self, p: nn.Parameter) -> nn.Parameter:
        """What the optimizer updates for `p`: its fp32 master, or `p` itself when it needs none."""
        return self._master_of.get(id(p), p)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        for p, master in self.pairs:
            self._hooks.append(p.register_post_accumulate_grad_hook(_accumulate_into(master)))
        self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.copy_to_params()))
        self._hooks.append(optimizer.register_state_dict_post_hook(self._save))
        self._hooks.append(optimizer.register_load_state_dict_pre_hook(self._load))

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for p, master in self.pairs:
            p.copy_(master)  # rounded into p's dtype; bumps p's version, which the engine watches

    def _save(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        state[STATE_KEY] = [master.detach().clone() for _, master in self.pairs]
        return state

    @torch.no_grad()
    def _load(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        saved = state.get(STATE_KEY)
        if saved is not None:
            if len(saved) != len(self.pairs) or any(s.shape != m.shape for s, (_, m) in zip(saved, self.pairs,
                                                                                            strict=False)):
                raise ValueError(
                    f"optimizer state: {len(saved)} fp32 master weights do not match this model's "
                    f"{len(self.pairs)} low-precision trainable parameters"
                )
            for value, (p, master) in zip(saved, self.pairs, strict=True):
                master.copy_(value)
                p.copy_(master)
        else:  # a state saved without masters (an fp32 run's, or an older one): start them from the weights
            for p, master in self.pairs:
                master.copy_(p)
        return {k: v for k, v in state.items() if k != STATE_KEY}


def _accumulate_into(master: torch.Tensor):
    def hook(p: torch.Tensor) -> None:
        if master.grad is None:
            master.grad = p.grad.float()
        else:
            master.grad.add_(p.grad)
        p.grad = None  # the fp32 copy is the gradient now; nothing reads the low-precision one

    return hook


def _is_distributed(p: torch.Tensor) -> bool:
    # FSDP2 shards (DTensor) keep their own mixed-precision policy; they get no master here.
    return type(p).__name__ == "DTensor"
