"""LLM judges on the in-process engine: pointwise rubric scores, pairwise preferences aggregated by Bradley-Terry,
and whole-group relative scoring in one prompt; with the robust parsers of their answers."""

from __future__ import annotations

from tao_engine.scoring.judges.bradley_terry import fit_bradley_terry
from tao_engine.scoring.judges.engine_judge import EngineJudge, JudgeEngine
from tao_engine.scoring.judges.group import GroupJudge
from tao_engine.scoring.judges.pairwise import PairwiseJudge, choose_pairs
from tao_engine.scoring.judges.parsing import parse_group_scores, parse_preference, parse_score
from tao_engine.scoring.judges.pointwise import PointwiseJudge

__all__ = [
    "EngineJudge",
    "GroupJudge",
    "JudgeEngine",
    "PairwiseJudge",
    "PointwiseJudge",
    "choose_pairs",
    "fit_bradley_terry",
    "parse_group_scores",
    "parse_preference",
    "parse_score",
]
