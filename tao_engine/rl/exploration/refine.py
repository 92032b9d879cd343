"""The `refine` exploration strategy: draft, then critique and revise with the same engine, keeping the last revision.

Stage by stage, each stage one batched engine call over every candidate of every prompt:
    draft     n samples of the inference-time prompt per prompt                     [P] requests x n
    critique  one sample per candidate: critique_template(prompt, draft)           [P*n] requests x 1
    revise    one sample per candidate: revise_template(prompt, draft, critique)   [P*n] requests x 1
and critique + revise repeat `refine_rounds` times, each revision becoming the next round's draft. The candidate is
the response transform of the last revision; its token cost counts every stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tao_engine.engine.prompts import PromptLike
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.exploration.candidate import Candidate
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.generation import generate_checked
from tao_engine.rl.exploration.templates import prompt_text, render
from tao_engine.rl.exploration.transforms import apply_transform


def refine_stages(rounds: int) -> int:
    """Generations per candidate: the draft, then a critique and a revision per round."""
    return 1 + 2 * rounds


def explore_refine(
    engine: Any, prompts: Sequence[PromptLike], params: Sequence[SamplingParams], config: ExplorationConfig
) -> list[list[Candidate]]:
    """[P][n] candidates, each the transformed last revision of its own draft."""
    for prompt in prompts:
        prompt_text(prompt, "refine")  # token-id prompts cannot be templated: fail before generating anything
    drafts = generate_checked(engine, prompts, params, "refine draft")
    # Flat over candidates, prompt-major: owner[k] = the prompt of candidate k.
    owner = [g for g, out in enumerate(drafts) for _ in out.samples]
    current = [s.text for out in drafts for s in out.samples]
    tokens = [len(s.token_ids) for out in drafts for s in out.samples]
    finish = [str(s.finish_reason) for out in drafts for s in out.samples]
    traces: list[list[str]] = [[text] for text in current]
    single = [dataclasses.replace(params[g], n=1) for g in owner]
    revise_prompts: list[PromptLike] = list(prompts)
    for _ in range(config.refine_rounds):
        critique_prompts = [
            render(prompts[g], config.critique_template, "refine", draft=current[k]) for k, g in enumerate(owner)
        ]
        critiques = _one_each(generate_checked(engine, critique_prompts, single, "refine critique"))
        revise_prompts = [
            render(prompts[g], config.revise_template, "refine", draft=current[k], critique=critiques[k].text)
            for k, g in enumerate(owner)
        ]
        revisions = _one_each(generate_checked(engine, revise_prompts, single, "refine revise"))
        for k in range(len(owner)):
            tokens[k] += len(critiques[k].token_ids) + len(revisions[k].token_ids)
            traces[k] += [critiques[k].text, revisions[k].text]
            current[k], finish[k] = revisions[k].text, str(revisions[k].finish_reason)
    out: list[list[Candidate]] = [[] for _ in prompts]
    for k, g in enumerate(owner):
        out[g].append(
            Candidate(
                strategy="refine", exploration_prompt=revise_prompts[k], raw_output=current[k],
                response=apply_transform(current[k], config.transform), tokens=tokens[k],
                temperature=params[g].temperature, finish_reason=finish[k], trace=tuple(traces[k]),
            )
        )
    return out


def _one_each(outputs: list) -> list:
    return [out.samples[0] for out in outputs]
