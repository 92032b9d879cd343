"""Label-free scoring: rules, verifiers, majority vote, reward models and judges, composed with weights.

Only the contract is imported here (stdlib only); each built-in scorer module is imported when it is used.
"""

from tao_engine.scoring.base import GroupScorer, Scorer, ScoreReport, Scores, ScoringError, run_scorer
from tao_engine.scoring.composite import CompositeScorer, WeightedScorer
from tao_engine.scoring.registry import (
    BUILTIN_SCORERS,
    build_composite,
    build_entry,
    build_scorer,
    composite_from_table,
    load_scorers_toml,
)

__all__ = [
    "BUILTIN_SCORERS",
    "CompositeScorer",
    "GroupScorer",
    "ScoreReport",
    "Scorer",
    "Scores",
    "ScoringError",
    "WeightedScorer",
    "build_composite",
    "build_entry",
    "build_scorer",
    "composite_from_table",
    "load_scorers_toml",
    "run_scorer",
]
