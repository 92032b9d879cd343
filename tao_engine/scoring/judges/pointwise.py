"""`PointwiseJudge` ("judge_pointwise"): an LLM rates each (prompt, completion) on a rubric scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tao_engine.scoring.chat_context import per_item, task_text
from tao_engine.scoring.judges.engine_judge import EngineJudge, JudgeEngine, check_scale, mean_or_none
from tao_engine.scoring.judges.parsing import parse_score
from tao_engine.scoring.judges.prompts import pointwise_prompt, truncate_middle


class PointwiseJudge(EngineJudge):
    """Pointwise scorer: the judge's score in [min_score, max_score] (mean over `samples` answers), None when no
    answer can be read. Candidates of one prompt arrive together, so their judge prompts share a cached prefix."""

    name = "judge_pointwise"

    def __init__(
        self,
        model: str | Path | None = None,
        engine: JudgeEngine | None = None,
        *,
        rubric: str | None = None,
        min_score: float = 0,  # the low end of the rating scale
        max_score: float = 10,  # the high end of the rating scale
        max_tokens: int = 256,
        samples: int = 1,
        temperature: float | None = None,
        seed: int = 0,
        max_response_chars: int | None = 8000,
        engine_config: Mapping[str, Any] | None = None,
    ) -> None:
        check_scale(self.name, min_score, max_score)
        super().__init__(model, engine, rubric=rubric, max_tokens=max_tokens, samples=samples,
                         temperature=temperature, seed=seed, max_response_chars=max_response_chars,
                         engine_config=engine_config)
        self.min_score, self.max_score = min_score, max_score

    def prompt_for(self, prompt: str, completion: str) -> str:
        response = truncate_middle(completion, self.max_response_chars)
        return pointwise_prompt(prompt, response, self.rubric, self.min_score, self.max_score)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(completions)} completions")
        tasks = [task_text(p, m, self.name) for p, m in zip(prompts, per_item(context, len(prompts), self.name),
                                                              strict=True)]
        answers = self.run([self.prompt_for(t, c) for t, c in zip(tasks, completions, strict=True)])
        scores: list[float | None] = []
        for texts in answers:
            if texts is None:
                scores.append(None)
                continue
            parsed = [parse_score(t, self.min_score, self.max_score) for t in texts]
            self.count_parse_failure(sum(v is None for v in parsed))
            scores.append(mean_or_none(parsed))
        return scores
