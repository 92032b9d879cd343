"""`GroupJudge` ("judge_group"): all n candidates of a prompt in one judge prompt, scored relative to one another
(as OpenPipe's RULER does); the judge answers with a JSON object of scores by candidate id."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partialmethod
from typing import Any

from tao_engine.scoring.judges.engine_judge import RatingJudge, mean_or_none
from tao_engine.scoring.judges.parsing import parse_group_scores
from tao_engine.scoring.judges.prompts import group_prompt, truncate_middle


class GroupJudge(RatingJudge):
    """Group scorer: each candidate's score in [min_score, max_score] (mean over `samples` answers); None for a
    candidate no answer scored. An answer with no readable score at all is a parse failure; candidates left out of
    an otherwise readable answer count in `missing_scores`."""

    name = "judge_group"
    extra_counters = ("missing_scores",)

    # Every candidate of a prompt in one judge prompt: each reply is shown shorter (4000 characters, not 8000) and
    # the answer holds n scores (512 tokens, not 256).
    __init__ = partialmethod(RatingJudge.__init__, max_tokens=512, max_response_chars=4000)

    def prompt_for(self, prompt: str, candidates: Sequence[str]) -> str:
        ids = candidate_ids(len(candidates))
        texts = [truncate_middle(c, self.max_response_chars) for c in candidates]
        return group_prompt(prompt, texts, ids, self.rubric, self.min_score, self.max_score)

    def score_groups(
        self, prompts: Sequence[str], groups: Sequence[Sequence[str]], **context: Any
    ) -> list[list[float | None]]:
        tasks = self.task_texts(prompts, groups, "groups", context)
        judged = [g for g, group in enumerate(groups) if len(group) > 0]
        answers = self.run([self.prompt_for(tasks[g], groups[g]) for g in judged])
        out: list[list[float | None]] = [[] for _ in groups]
        for g, texts in zip(judged, answers, strict=True):
            ids = candidate_ids(len(groups[g]))
            per_candidate: dict[str, list[float | None]] = {i: [] for i in ids}
            for text in texts or []:
                parsed = parse_group_scores(text, ids, self.min_score, self.max_score)
                readable = [v for v in parsed.values() if v is not None]
                if not readable:
                    self.count_parse_failure()
                    continue
                self.count("missing_scores", len(ids) - len(readable))
                for i, value in parsed.items():
                    per_candidate[i].append(value)
            out[g] = [mean_or_none(per_candidate[i]) for i in ids]
        return out


def candidate_ids(n: int) -> list[str]:
    return [str(k + 1) for k in range(n)]
