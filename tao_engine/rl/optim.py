"""Optimizer, learning-rate schedule and a guarded optimizer step for the RL trainer.

- `build_optimizer`: AdamW over the trainable parameters; matrices decay, 1-D parameters (norm weights, biases)
  do not; bf16/fp16 parameters are updated through fp32 master weights (rl/master_weights.py).
- `build_scheduler`: LambdaLR with linear warmup then constant, linear or cosine decay to `min_lr_ratio * lr`.
- `GuardedStep`: gradient unscale (fp16 GradScaler), norm and clipping, then the step, unless the loss or the
  gradient norm is NaN/inf: that step is skipped (gradients zeroed; weights, optimizer and scheduler untouched),
  counted, and reported with its reason, so one bad batch never corrupts the weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import increment_version

from tao_engine.config_dict import dataclass_from_dict
from tao_engine.rl.master_weights import MasterWeights

SCHEDULES = ("constant", "linear", "cosine")
# Default learning rates (OptimConfig.lr None). LoRA adapters start at zero and move through a low-rank update scaled
# by alpha / r, so they need a much larger step than full fine-tuning: 2e-4 is where `make demo` (r 16, alpha 32)
# raises its reward within 8 steps; 1e-5 is the usual top of the RL fine-tuning range for the whole model.
LORA_LR = 2e-4
FULL_FINETUNE_LR = 1e-5


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and LR schedule settings. max_grad_norm None: no clipping (the norm is still measured and guarded)."""

    lr: float | None = None  # None: 2e-4 when the model has LoRA adapters, 1e-5 without (LORA_LR, FULL_FINETUNE_LR)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decay rates
    weight_decay: float = 0.0  # decoupled, on matrices only (never norm weights or biases)
    eps: float = 1e-8  # AdamW's denominator epsilon
    warmup_steps: int = 0  # optimizer steps of linear warmup
    schedule: str = "constant"  # after warmup: constant, linear or cosine decay
    min_lr_ratio: float = 0.0  # where a linear or cosine decay ends, as a fraction of lr
    max_grad_norm: float | None = 1.0  # clip the gradient norm to this; None: no clipping (the norm is still logged)

    def __post_init__(self) -> None:
        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"OptimConfig.{name} must be a finite number, got {value!r}")
            return float(value)

        if self.lr is not None and not number("lr", self.lr) > 0:
            raise ValueError(f"OptimConfig.lr must be > 0 (or None: the default for the model), got {self.lr!r}")
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise ValueError(f"OptimConfig.betas must be two numbers (beta1, beta2), got {betas!r}")
        betas = tuple(number("betas", b) for b in betas)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"OptimConfig.betas must each be in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if number("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"OptimConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not number("eps", self.eps) > 0:
            raise ValueError(f"OptimConfig.eps must be > 0, got {self.eps!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"OptimConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptimConfig.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= number("min_lr_ratio", self.min_lr_ratio) <= 1:
            raise ValueError(f"OptimConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not number("max_grad_norm", self.max_grad_norm) > 0:
            raise ValueError(f"OptimConfig.max_grad_norm must be > 0 (or None for no clipping), got "
                             f"{self.max_grad_norm!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimConfig:
        return dataclass_from_dict(cls, d)


def build_optimizer(
    params: nn.Module | Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of a module (or of `(name, param)` pairs).

    Two groups, in parameter order: "decay" (tensors of 2+ dims) and "no_decay" (norm weights, biases: 1-D); empty
    groups are left out. The groups carry a "name" so logs and checkpoints can tell them apart.
    """
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    decay, no_decay, seen = [], [], set()
    adapters = False  # whether the trainable parameters are LoRA adapters (the default lr depends on it)
    for name, p in named:
        if not p.requires_grad or id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        adapters = adapters or ".lora_" in f".{name}"
        (decay if p.dim() >= 2 else no_decay).append(p)
    if not seen:
        raise ValueError("build_optimizer: no trainable parameters (all have requires_grad=False)")
    # bf16/fp16 parameters are updated through fp32 masters (rl/master_weights.py); fp32 ones are their own.
    masters = MasterWeights(decay + no_decay)
    lr = cfg.lr if cfg.lr is not None else (LORA_LR if adapters else FULL_FINETUNE_LR)
    groups = [
        {"params": [masters.master(p) for p in ps], "weight_decay": wd, "name": name}
        for name, ps, wd in (("decay", decay, cfg.weight_decay), ("no_decay", no_decay, 0.0))
        if ps
    ]
    # The fused kernel updates each tensor in one pass over its state (on the 2-core CPU 0.10 s against the default's
    # 0.52 s per step for SmolLM2's 128 M parameters); it takes plain float tensors on the CPU or a GPU (FSDP2's
    # sharded DTensors keep the default implementation).
    owned = [p for g in groups for p in g["params"]]
    fused = all(type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for p in owned) or None
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                  fused=fused)
    masters.attach(optimizer)
    return optimizer


@dataclass
class LRSchedule:
    """Multiplier of the base LR at scheduler step `step` (0-based: the multiplier used by the step-th update).

    A callable object rather than a closure: LambdaLR saves its __dict__ in `state_dict`, so a checkpoint restores it.
    """

    schedule: str
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # linear up to 1; the first update already moves
        if self.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 1.0 - progress if self.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup over `cfg.warmup_steps`, then `cfg.schedule` decays over the rest of `total_steps` optimizer steps."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"build_scheduler: total_steps must be a positive integer, got {total_steps!r}")
    if cfg.schedule != "constant" and cfg.warmup_steps >= total_steps:
        raise ValueError(
            f"build_scheduler: warmup_steps ({cfg.warmup_steps}) must be below total_steps ({total_steps}) for a "
            f"{cfg.schedule!r} schedule; lower warmup_steps or raise the step count"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, LRSchedule(cfg.schedule, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )


@dataclass(frozen=True)
class StepResult:
    """applied: whether the weights moved; grad_norm: total norm before clipping (after unscaling); lr: the LR of
    the first group used for this update (or that would have been); skip_reason: why the step was skipped."""

    applied: bool
    grad_norm: float
    lr: float
    skip_reason: str | None = None


class GuardedStep:
    """One optimizer update with a NaN/inf guard: `result = guarded(loss)` after `loss.backward()`.

    Applied: unscale (if a GradScaler is given), clip to `max_grad_norm`, optimizer step, scheduler step, zero the
    gradients. Skipped (loss or gradient norm not finite): zero the gradients only, so weights, optimizer state and
    the schedule stay bit-identical; `skipped_steps` counts these. With a GradScaler its scale still backs off.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        max_grad_norm: float | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"GuardedStep: max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        self.optimizer, self.scheduler, self.max_grad_norm, self.scaler = optimizer, scheduler, max_grad_norm, scaler
        self.applied_steps = 0
        self.skipped_steps = 0

    @classmethod
    def from_config(cls, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: OptimConfig,
                    scaler: torch.amp.GradScaler | None = None) -> GuardedStep:
        return cls(optimizer, scheduler, cfg.max_grad_norm, scaler)

    def _params_with_grads(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    def __call__(self, loss: torch.Tensor | float | None = None) -> StepResult:
        lr = float(self.optimizer.param_groups[0]["lr"])
        reason = None
        loss_value = None if loss is None else float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if loss_value is not None and not math.isfinite(loss_value):
            reason = f"loss is {loss_value}"
        unscaled = self.scaler is not None and reason is None
        if unscaled:
            self.scaler.unscale_(self.optimizer)
        params = self._params_with_grads()
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        grad_norm = float(norm)  # one host sync per update
        if reason is None and not math.isfinite(grad_norm):
            reason = f"grad norm is {grad_norm}"
        if reason is not None:
            self.optimizer.zero_grad(set_to_none=True)
            if unscaled:
                self.scaler.update()  # back off the fp16 loss scale: unscale_ recorded the inf
            self.skipped_steps += 1
            return StepResult(False, grad_norm, lr, reason)
        if self.max_grad_norm is not None and params:
            torch.nn.utils.clip_grads_with_norm_(params, self.max_grad_norm, norm)  # scales each p.grad in place
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # grads already unscaled and finite: a plain step
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.optimizer.defaults.get("fused"):
            # The fused kernel writes the parameters without bumping their version counters, by which an Engine
            # sharing these weights sees an update (its prompt KV of the old weights would be reused otherwise).
            for p in params:
                increment_version(p)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.applied_steps += 1
        return StepResult(True, grad_norm, lr)

    def state_dict(self) -> dict[str, int]:
        """Counters only (JSON-friendly): the optimizer, scheduler and scaler save their own state."""
        return {"applied_steps": self.applied_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.applied_steps = int(state["applied_steps"])
        self.skipped_steps = int(state["skipped_steps"])
