"""`PolicyForward`: the one way RL runs a policy forward, for the old, reference, new and exploration log-probs.

The PPO ratio pi_new / pi_old is exactly 1 on the first pass only when both log-probs come from the same
computation: the same temperature, packing and autocast. So every forward of an update takes its settings from one
`PolicyForward`, and its autocast context wraps each of them (a forward outside it would run in fp32 while the
update's ran in bf16, and the first ratio would be off by bf16's rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tao_engine.rl.logprobs import CompletionLogprobs, completion_logprobs
from tao_engine.rl.lora import lora_disabled


@dataclass(frozen=True)
class PolicyForward:
    temperature: float = 1.0
    shared_prompt: bool = True  # forward each prompt once for its n completions
    bf16_autocast: bool = True  # fp32 weights, bf16 matmuls, on the device types below
    # CPU bf16 autocast is real but slower than fp32 there: on for CUDA only, unless asked for.
    autocast_devices: tuple[str, ...] = ("cuda",)

    def autocast(self, module: nn.Module) -> torch.autocast:
        """The autocast context of every forward of `module` (a no-op block where it does not apply)."""
        device = next(module.parameters()).device
        enabled = self.bf16_autocast and device.type in self.autocast_devices
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)

    def logprobs(
        self,
        module: nn.Module,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[Sequence[int]]],
        max_tokens_per_forward: int | None = None,
        return_entropy: bool = False,
        gradient_checkpointing: bool = False,
    ) -> CompletionLogprobs:
        """`completion_logprobs` of prompt_ids [P], completion_ids [P][n] under this forward's autocast."""
        with self.autocast(module):
            return completion_logprobs(
                module, prompt_ids, completion_ids, self.temperature, shared_prompt=self.shared_prompt,
                return_entropy=return_entropy, max_tokens_per_forward=max_tokens_per_forward,
                gradient_checkpointing=gradient_checkpointing,
            )

    def batch_logprobs(self, module: nn.Module, rollouts: Any, max_tokens_per_forward: int | None,
                       data_parallel: Any = None) -> CompletionLogprobs:
        """[B, T] log-probs of every completion of `rollouts` without grad (old or reference), as the update's."""
        # Sharded (FSDP2) modules forward with their full weights here: ranks pack different numbers of forwards.
        weights = nullcontext() if data_parallel is None else data_parallel.full_weights(module, "update: log-probs")
        with torch.no_grad(), weights:
            return self.logprobs(module, rollouts.prompt_token_ids, rollouts.completion_token_ids,
                                 max_tokens_per_forward=max_tokens_per_forward)

    def reference_logprobs(self, policy: nn.Module, reference: nn.Module | None, rollouts: Any,
                           max_tokens_per_forward: int | None, data_parallel: Any = None) -> CompletionLogprobs:
        """The reference policy's `batch_logprobs`: `reference`'s, or under LoRA the policy's frozen base weights'
        (no copy needed)."""
        if reference is not None:
            return self.batch_logprobs(reference, rollouts, max_tokens_per_forward, data_parallel)
        with lora_disabled(policy):
            return self.batch_logprobs(policy, rollouts, max_tokens_per_forward, data_parallel)
