"""`PointwiseJudge` ("judge_pointwise"): an LLM rates each (prompt, completion) on a rubric scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tao_engine.scoring.judges.engine_judge import RatingJudge, mean_or_none
from tao_engine.scoring.judges.parsing import parse_score
from tao_engine.scoring.judges.prompts import pointwise_prompt, truncate_middle


class PointwiseJudge(RatingJudge):
    """Pointwise scorer: the judge's score in [min_score, max_score] (mean over `samples` answers), None when no
    answer can be read. Candidates of one prompt arrive together, so their judge prompts share a cached prefix."""

    name = "judge_pointwise"

    def prompt_for(self, prompt: str, completion: str) -> str:
        response = truncate_middle(completion, self.max_response_chars)
        return pointwise_prompt(prompt, response, self.rubric, self.min_score, self.max_score)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> list[float | None]:
        tasks = self.task_texts(prompts, completions, "completions", context)
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
