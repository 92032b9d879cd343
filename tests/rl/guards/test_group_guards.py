"""The per-group and cross-prompt guards as plain functions: answer keys and votes, the group filter, advantage
reshaping, the collapse check and the format warm-up's rewards."""

from __future__ import annotations

import math

import pytest

from tao_engine.rl.guards.answers import answer_keys, group_vote
from tao_engine.rl.guards.collapse import check_collapse, cross_prompt_answers
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.guards.group_filter import shape_groups
from tao_engine.rl.guards.warmup import warmup_rewards


def test_answer_keys_follow_the_scorer_then_the_extractor_then_the_whole_reply():
    texts = [["Answer: 1,000", "so 1000.0", "none here"]]
    assert answer_keys(texts, "auto", [["a", "b", None]]) == [["a", "b", None]]
    by_number = answer_keys(texts, "last_number")
    assert by_number[0][0] == by_number[0][1] and by_number[0][2] is None  # "1,000" == "1000.0"
    whole = answer_keys([["  Yes ", "yes", ""]], "auto")
    assert whole[0][0] == whole[0][1] and whole[0][2] is None
    with pytest.raises(ValueError, match="do not match"):
        answer_keys(texts, "auto", [["a"]])


def test_group_vote_counts_answered_candidates_and_breaks_ties_by_first_seen():
    vote = group_vote(["b", "a", "a", "b", None, "c"])
    assert (vote.top, vote.top_votes, vote.runner_up_votes, vote.answered, vote.distinct, vote.size) == (
        "b", 2, 2, 5, 3, 6)
    assert vote.share == pytest.approx(2 / 6)  # unanswered candidates count against the majority
    assert group_vote([None, None]).top is None and group_vote([None, None]).share == 0.0


def test_group_filter_skips_unclear_and_polarized_groups():
    rewards = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    keys = [["a", "b", "c", "d"], ["a", "a", "b", "b"], ["a", "a", "a", "b"]]
    shaped = shape_groups(rewards, keys, GuardsSection(min_majority_share=0.5, polarized_ratio=1.0))
    assert shaped.rewards[0] == [None] * 4  # top share 1/4 < 0.5: unclear
    assert shaped.rewards[1] == [None] * 4  # 2 vs 2: polarized (a tie at ratio 1.0)
    assert shaped.rewards[2] == rewards[2]
    assert (shaped.skipped_unclear, shaped.skipped_polarized) == (1, 1)
    assert shaped.advantage_scale is None  # nothing reshapes advantages: train_step sees no scale
    off = shape_groups(rewards, keys, GuardsSection())
    assert off.rewards == rewards and off.skipped_unclear == off.skipped_polarized == 0


def test_agreement_scaling_and_minority_weight_shape_the_advantages():
    keys = [["a", "a", "a", "b"], ["x", "y", None, "x"]]
    shaped = shape_groups([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]], keys,
                          GuardsSection(agreement_scaling=True, minority_weight=0.5))
    assert shaped.advantage_scale == [[0.75, 0.75, 0.75, 0.375], [0.5, 0.25, 0.5, 0.5]]  # no answer: not a minority


def test_collapse_penalizes_the_answer_that_wins_most_prompts():
    keys = [["A", "A", "b"], ["A", "c", "A"], ["A", "A", "A"], ["d", "d", "A"]]
    rewards = [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    votes = [group_vote(k) for k in keys]
    answers = cross_prompt_answers(votes)
    assert answers.dominant == "A" and answers.dominant_share == pytest.approx(3 / 4) and answers.prompts == 4
    guards = GuardsSection(collapse_share=0.5, collapse_min_prompts=4)
    check = check_collapse(rewards, keys, votes, guards)
    assert check.collapsing
    assert check.rewards == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    assert check.penalized_samples == 8
    for share, min_prompts in ((0.8, 4), (0.5, 5)):  # below the share, or too few prompts to tell
        assert not check_collapse(rewards, keys, votes, GuardsSection(collapse_share=share,
                                                                      collapse_min_prompts=min_prompts)).collapsing
    stop = check_collapse(rewards, keys, votes, GuardsSection(collapse_share=0.5, collapse_action="stop"))
    assert stop.collapsing and stop.rewards == rewards  # "stop" leaves the rewards: the loop ends the run


def test_collapse_by_answer_entropy_against_a_baseline():
    votes = [group_vote(k) for k in (["a"], ["a"], ["a"], ["b"])]
    entropy = cross_prompt_answers(votes).answer_entropy
    assert 0 < entropy < 1
    guards = GuardsSection(collapse_entropy_ratio=0.9)
    rewards = [[1.0]] * 4
    assert check_collapse(rewards, [["a"], ["a"], ["a"], ["b"]], votes, guards, baseline_entropy=1.0).collapsing
    assert not check_collapse(rewards, [["a"], ["a"], ["a"], ["b"]], votes, guards, baseline_entropy=entropy).collapsing
    assert math.isnan(cross_prompt_answers([group_vote([None])]).answer_entropy)


def test_warmup_imitates_only_candidates_every_rule_passes():
    per_scorer = [{"format": [1.0, 1.0, 0.0, None], "grounded": [1.0, 0.0, 1.0, None], "vote": [0.0, 1.0, 1.0, 1.0]}]
    assert warmup_rewards(per_scorer, ["format", "grounded"], 0.5) == [[1.0, None, None, None]]
    with pytest.raises(ValueError, match="at least one rule scorer"):
        warmup_rewards(per_scorer, [], 0.5)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("min_majority_share", 1.5, "min_majority_share must be a number in"),
    ("collapse_action", "explode", "collapse_action must be one of"),
    ("holdout_n", 1, "holdout_n must be an integer >= 2"),
    ("answer", "nope", "answer must be 'auto' or one of"),
    ("keep_best", True, "keep_best need a held-out score"),
])
def test_guards_section_names_the_bad_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        GuardsSection(**{field: value})
