"""The single-shot exploration strategies, batched over every prompt at once:

- `plain`: n samples of the inference-time prompt; the candidate is the sample itself (its token ids are kept).
- `reason`: n samples of the prompt wrapped in a reasoning template; the candidate is the response transform of
  each output (the final answer the model should give directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tao_engine.engine.prompts import PromptLike
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.generation import generate_checked
from tao_engine.rl.exploration.templates import reason_template_text, render
from tao_engine.rl.exploration.transforms import apply_transform


def explore_plain(
    engine: Any, prompts: Sequence[PromptLike], params: Sequence[SamplingParams]
) -> list[list[Candidate]]:
    """[P][n] candidates sampled from the inference-time prompts themselves."""
    outputs = generate_checked(engine, prompts, params, "plain")
    return [
        [
            Candidate(
                strategy="plain", exploration_prompt=prompt, raw_output=s.text, response=s.text,
                tokens=len(s.token_ids), temperature=p.temperature, finish_reason=str(s.finish_reason),
                response_token_ids=tuple(s.token_ids),
            )
            for s in out.samples
        ]
        for prompt, p, out in zip(prompts, params, outputs, strict=True)
    ]


def explore_reason(
    engine: Any, prompts: Sequence[PromptLike], params: Sequence[SamplingParams], config: ExplorationConfig
) -> list[list[Candidate]]:
    """[P][n] candidates: reasoning outputs of the templated prompts, each cut to its transformed response."""
    template = reason_template_text(config.reason_template)
    asked = [render(prompt, template, "reason") for prompt in prompts]
    outputs = generate_checked(engine, asked, params, "reason")
    return [
        [
            Candidate(
                strategy="reason", exploration_prompt=ask, raw_output=s.text,
                response=apply_transform(s.text, config.transform), tokens=len(s.token_ids),
                temperature=p.temperature, finish_reason=str(s.finish_reason),
            )
            for s in out.samples
        ]
        for ask, p, out in zip(asked, params, outputs, strict=True)
    ]
