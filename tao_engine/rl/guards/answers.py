"""Each candidate's answer as a hashable key, and the vote of each group over those keys.

A key is what two candidates must share to count as the same answer: the voting scorer's own notion when there is
one (majority_vote's normalized extracted answer, sql_agreement's result set: `CompositeScorer` reports them as
`ScoreReport.answers`), else the reply through a named extractor, normalized as majority vote does ("1,000" ==
"1000.0"), else the whole reply, normalized. None = the candidate gave no answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from tao_engine.rl.guards.config import ANSWER_AUTO
from tao_engine.scoring.extract import get_extractor, stripped
from tao_engine.scoring.majority import normalize_answer

AnswerKeys = list[list[Hashable | None]]  # [P][n]


def answer_keys(texts: Sequence[Sequence[str]], answer: str = ANSWER_AUTO,
                scorer_keys: Sequence[Sequence[Hashable | None]] | None = None) -> AnswerKeys:
    """[P][n] keys of the candidates `texts` [P][n]. answer: "auto" (the scorer's keys when given, else the whole
    normalized reply) or an extractor name (tao_engine.scoring.extract.EXTRACTORS)."""
    if answer == ANSWER_AUTO and scorer_keys is not None:
        if [len(g) for g in scorer_keys] != [len(g) for g in texts]:
            raise ValueError("answer_keys: the scorer's answer keys do not match the candidates [P][n]")
        return [list(g) for g in scorer_keys]
    extract = stripped if answer == ANSWER_AUTO else get_extractor(answer)
    out: AnswerKeys = []
    for group in texts:
        keys: list[Hashable | None] = []
        for text in group:
            found = extract(text)
            keys.append(None if found is None else normalize_answer(found))
        out.append(keys)
    return out


@dataclass(frozen=True)
class GroupVote:
    """The vote of one group of n candidates over their answer keys."""

    top: Hashable | None  # the majority answer (first seen on ties); None when nobody answered
    top_votes: int
    runner_up_votes: int
    answered: int  # candidates with an answer
    distinct: int  # different answers given
    size: int  # n

    @property
    def share(self) -> float:
        """The top answer's share of the whole group (unanswered candidates count against it)."""
        return self.top_votes / self.size if self.size else 0.0


def group_vote(keys: Sequence[Hashable | None]) -> GroupVote:
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return GroupVote(None, 0, 0, 0, 0, len(keys))
    top = max(counts, key=counts.__getitem__)  # Counter keeps first-seen order: ties go to the first answer
    runner_up = max((c for k, c in counts.items() if k != top), default=0)
    return GroupVote(top, counts[top], runner_up, sum(counts.values()), len(counts), len(keys))
