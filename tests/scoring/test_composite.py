"""CompositeScorer: combine modes, weights, None handling, on_error, diagnostics; run_scorer with async scorers."""

from __future__ import annotations

import asyncio
import math

import pytest

from tao_engine.scoring.base import ScoringError, run_scorer
from tao_engine.scoring.composite import CompositeScorer, WeightedScorer, standardize


class LengthScore:
    name = "len"

    def score(self, prompts, completions, **context):
        return [float(len(c)) for c in completions]


class PromptEcho:
    """Pointwise; checks that prompts and per-prompt context are repeated for each candidate."""

    name = "echo"

    def score(self, prompts, completions, tag=None, **context):
        assert len(prompts) == len(completions) == len(tag)
        return [1.0 if t == p.upper() else 0.0 for p, t in zip(prompts, tag, strict=True)]


class AsyncGroupFirst:
    name = "first"

    async def score_groups(self, prompts, groups, **context):
        await asyncio.sleep(0)
        return [[1.0 if j == 0 else 0.0 for j in range(len(g))] for g in groups]


class NoneForX:
    name = "maybe"

    def score(self, prompts, completions, **context):
        return [None if c == "x" else 1.0 for c in completions]


class FailsOn:
    """Raises whenever the batch holds prompt `bad`."""

    def __init__(self, bad, name="fails"):
        self.bad, self.name = bad, name

    def score(self, prompts, completions, **context):
        if self.bad in prompts:
            raise RuntimeError(f"boom on {self.bad}")
        return [0.5] * len(completions)


PROMPTS = ["p", "q"]
GROUPS = [["a", "bbb", "cc"], ["dddd", "x"]]


def test_weighted_sum_and_per_scorer_shapes():
    comp = CompositeScorer([WeightedScorer(LengthScore(), 0.5), WeightedScorer(AsyncGroupFirst(), 2.0)])
    rep = comp.score_groups(PROMPTS, GROUPS)
    assert rep.per_scorer["len"] == [[1.0, 3.0, 2.0], [4.0, 1.0]]
    assert rep.per_scorer["first"] == [[1.0, 0.0, 0.0], [1.0, 0.0]]
    assert rep.scores == [[2.5, 1.5, 1.0], [4.0, 0.5]]


def test_context_is_repeated_per_candidate_for_pointwise_scorers():
    rep = CompositeScorer([WeightedScorer(PromptEcho())]).score_groups(PROMPTS, GROUPS, tag=["P", "nope"])
    assert rep.scores == [[1.0, 1.0, 1.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="tag"):
        CompositeScorer([WeightedScorer(PromptEcho())]).score_groups(PROMPTS, GROUPS, tag=["P"])


def test_normalize_then_sum_standardizes_each_scorer_within_group():
    comp = CompositeScorer([WeightedScorer(LengthScore(), 1.0), WeightedScorer(AsyncGroupFirst(), 1.0)],
                           combine="normalize_then_sum")
    rep = comp.score_groups(PROMPTS, GROUPS)
    z_len = standardize([1.0, 3.0, 2.0])
    z_first = standardize([1.0, 0.0, 0.0])
    assert rep.scores[0] == pytest.approx([a + b for a, b in zip(z_len, z_first, strict=True)])
    assert rep.scores[1] == pytest.approx([2.0, -2.0])  # z of [4, 1] and of [1, 0] are both [1, -1]


def test_sum_then_normalize_standardizes_combined_and_zero_variance_gives_zero():
    comp = CompositeScorer([WeightedScorer(LengthScore(), 1.0), WeightedScorer(AsyncGroupFirst(), 3.0)],
                           combine="sum_then_normalize")
    rep = comp.score_groups(["p"], [["a", "b", "cc"]])
    raw = [4.0, 1.0, 2.0]
    mean, std = sum(raw) / 3, math.sqrt(sum((v - 7 / 3) ** 2 for v in raw) / 3)
    assert rep.scores[0] == pytest.approx([(v - mean) / std for v in raw])
    flat = CompositeScorer([WeightedScorer(LengthScore())], combine="sum_then_normalize")
    assert flat.score_groups(["p"], [["aa", "bb"]]).scores == [[0.0, 0.0]]


def test_none_scores_are_left_out_and_all_none_gives_none():
    comp = CompositeScorer([WeightedScorer(NoneForX(), 2.0)])
    rep = comp.score_groups(PROMPTS, GROUPS)
    assert rep.scores == [[2.0, 2.0, 2.0], [2.0, None]]
    assert rep.metrics["maybe/none_frac"] == pytest.approx(1 / 5)
    both = CompositeScorer([WeightedScorer(NoneForX(), 2.0), WeightedScorer(LengthScore(), 1.0)])
    assert both.score_groups(["q"], [["x"]]).scores == [[1.0]]


def test_diagnostics_mean_std_zero_variance():
    rep = CompositeScorer([WeightedScorer(LengthScore())]).score_groups(["p", "q"], [["a", "bbb"], ["cc", "dd"]])
    m = rep.metrics
    assert m["len/mean"] == pytest.approx(2.0)
    assert m["len/std"] == pytest.approx(math.sqrt(0.5))
    assert m["len/zero_variance_frac"] == pytest.approx(0.5)
    assert m["len/errors"] == 0.0 and m["len/none_frac"] == 0.0
    assert m["combined/mean"] == pytest.approx(2.0)


def test_on_error_raise_names_scorer_prompt_and_exception():
    comp = CompositeScorer([WeightedScorer(LengthScore()), WeightedScorer(FailsOn("q"))], on_error="raise")
    with pytest.raises(ScoringError, match=r"'fails' failed on prompt 1: RuntimeError: boom on q") as info:
        comp.score_groups(PROMPTS, GROUPS)
    assert info.value.prompt_index == 1 and info.value.scorer == "fails"


def test_on_error_none_isolates_failing_prompt_and_counts():
    comp = CompositeScorer([WeightedScorer(FailsOn("q"))], on_error="none")
    rep = comp.score_groups(["p", "q", "r"], [["a"], ["b", "c"], ["d"]])
    assert rep.per_scorer["fails"] == [[0.5], [None, None], [0.5]]
    assert rep.scores == [[0.5], [None, None], [0.5]]
    assert rep.metrics["fails/errors"] == 1.0
    assert rep.metrics["fails/batch_retries"] == 1.0


def test_malformed_output_is_an_error_not_a_silent_zero():
    class Bad:
        name = "bad"

        def score(self, prompts, completions, **context):
            return [float("nan")] * len(completions)

    with pytest.raises(ScoringError, match="finite"):
        CompositeScorer([WeightedScorer(Bad())]).score_groups(["p"], [["a"]])
    short = type("Short", (), {"name": "short", "score": lambda self, p, c, **k: [1.0]})()
    rep = CompositeScorer([WeightedScorer(short)], on_error="none").score_groups(["p"], [["a", "b"]])
    assert rep.scores == [[None, None]] and rep.metrics["short/errors"] == 1.0


def test_async_timeout_scores_none_and_is_counted():
    class Slow:
        name = "slow"

        async def score(self, prompts, completions, **context):
            await asyncio.sleep(5)
            return [1.0] * len(completions)

    comp = CompositeScorer([WeightedScorer(Slow(), timeout_s=0.05)], on_error="raise")  # a timeout never raises
    rep = comp.score_groups(["p"], [["a"]])
    assert rep.scores == [[None]] and rep.metrics["slow/timeouts"] == 1.0 and rep.metrics["slow/errors"] == 0.0


def test_run_scorer_inside_a_running_loop():
    async def main():
        return run_scorer(AsyncGroupFirst(), ["p"], [["a", "b"]])

    assert asyncio.run(main()) == [[1.0, 0.0]]


def test_scorer_metrics_are_prefixed():
    class Counting(LengthScore):
        def metrics(self):
            return {"parse_failures": 3}

    rep = CompositeScorer([WeightedScorer(Counting(), label="judge")]).score_groups(["p"], [["a"]])
    assert rep.metrics["judge/parse_failures"] == 3.0 and "judge/mean" in rep.metrics


def test_construction_errors():
    with pytest.raises(ValueError, match="combine"):
        CompositeScorer([WeightedScorer(LengthScore())], combine="mean")
    with pytest.raises(ValueError, match="on_error"):
        CompositeScorer([WeightedScorer(LengthScore())], on_error="zero")
    with pytest.raises(ValueError, match="unique"):
        CompositeScorer([WeightedScorer(LengthScore()), WeightedScorer(LengthScore())])
    with pytest.raises(ValueError, match="weight"):
        WeightedScorer(LengthScore(), weight=float("inf"))
    with pytest.raises(TypeError, match="not a scorer"):
        WeightedScorer(object())
