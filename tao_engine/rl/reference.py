"""The reference policy of KL penalties and DPO: a frozen copy of the policy's weights at the start of tuning."""

from __future__ import annotations

import copy

from torch import nn


def frozen_copy(policy: nn.Module) -> nn.Module:
    """A deep copy of `policy` in eval mode with every parameter frozen: the reference the update is anchored to.

    It costs one more copy of the weights, so the trainer holds it only when the algorithm needs it (kl_coef > 0,
    DPO). With LoRA the base weights already are the reference and no copy is needed.
    """
    reference = copy.deepcopy(policy)
    reference.eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    return reference
