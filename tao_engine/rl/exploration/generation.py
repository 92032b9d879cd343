"""One batched engine call for an exploration stage: every prompt's request at once, failures named by prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tao_engine.engine.outputs import FINISH_LENGTH, FINISH_STOP
from tao_engine.engine.prompts import PromptLike
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.rollouts import RolloutError


def generate_checked(engine: Any, prompts: Sequence[PromptLike], params: Sequence[SamplingParams], stage: str) -> list:
    """engine.generate(prompts, params) (one SamplingParams per prompt); a failed request raises naming the stage."""
    if not prompts:
        return []
    outputs = engine.generate(list(prompts), list(params))
    for i, out in enumerate(outputs):
        bad = [s.finish_reason for s in out.samples if s.finish_reason not in (FINISH_STOP, FINISH_LENGTH)]
        if out.error or bad:
            raise RolloutError(
                f"exploration {stage}: request {i} ({len(out.prompt_token_ids)} prompt tokens) failed: "
                f"{out.error or bad}; shorten the prompt or template, or raise the engine's max_model_len / KV budget"
            )
    return outputs
