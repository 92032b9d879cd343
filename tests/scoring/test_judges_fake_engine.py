"""The three judges end to end on a fake judge engine that returns canned answers: aggregation (means over samples,
Bradley-Terry over both orders, per-candidate JSON), counters, prompt layout (shared prefix first), and errors."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable

import pytest

from tao_engine.engine.outputs import RequestMetrics, RequestOutput, SampleOutput
from tao_engine.scoring.judges import (
    GroupJudge,
    PairwiseJudge,
    PointwiseJudge,
    choose_pairs,
    fit_bradley_terry,
)

FAIL = object()  # a responder returns this for a request the engine cannot run


class FakeJudgeEngine:
    """Engine.generate's interface; `respond(user_message, sample_index)` gives each answer."""

    def __init__(self, respond: Callable[[str, int], object]) -> None:
        self.respond = respond
        self.messages: list[str] = []
        self.sampling = []

    def generate(self, prompts, sampling):
        self.sampling.append(sampling)
        outputs = []
        for k, chat in enumerate(prompts):
            assert [m["role"] for m in chat] == ["user"]
            message = chat[0]["content"]
            self.messages.append(message)
            answers = [self.respond(message, i) for i in range(sampling.n)]
            output = RequestOutput(f"r{k}", message, [1], [], RequestMetrics(0.0))
            if any(a is FAIL for a in answers):
                output.error = "prompt longer than the context"
            else:
                output.samples = [SampleOutput(i, text=str(a), finish_reason="stop") for i, a in enumerate(answers)]
            outputs.append(output)
        return outputs


QUALITY = {"Paris.": 9, "Lyon.": 3, "It is Paris, the capital.": 7, "I don't know.": 1, "Marseille.": 3}


def section(message: str, title: str) -> str:
    return re.search(rf"# {title}\n(.*?)\n\n", message, re.S).group(1)


# ---- pointwise -------------------------------------------------------------------------------------------------


def test_pointwise_scores_and_counters():
    styles = ["Score: {q}", "**Score:** {q}/10", '{{"score": {q}}}', "Reasoning...\n[[{q}]]"]

    def respond(message: str, i: int) -> object:
        response = section(message, "Response")
        if response == "Marseille.":
            return "I cannot decide."
        if response == "I don't know.":
            return FAIL
        return styles[len(response) % len(styles)].format(q=QUALITY[response])

    engine = FakeJudgeEngine(respond)
    judge = PointwiseJudge(engine=engine, rubric="Correct city names score high.")
    completions = ["Paris.", "Lyon.", "It is Paris, the capital.", "Marseille.", "I don't know."]
    scores = judge.score(["Capital of France?"] * 5, completions)
    assert scores == [9.0, 3.0, 7.0, None, None]
    assert engine.sampling[0].greedy and engine.sampling[0].n == 1  # greedy by default
    metrics = judge.metrics()
    assert metrics["judge_calls"] == 5 and metrics["judge_outputs"] == 4
    assert metrics["parse_failures"] == 1 and metrics["request_errors"] == 1
    assert metrics["parse_failure_rate"] == pytest.approx(0.25)
    assert judge.metrics()["judge_calls"] == 0  # counters since the last call


def test_pointwise_prompt_puts_the_shared_part_first():
    engine = FakeJudgeEngine(lambda message, i: "Score: 5")
    PointwiseJudge(engine=engine, rubric="RUBRIC-TEXT").score(["Capital of France?"] * 2, ["Paris.", "Lyon."])
    shared = os.path.commonprefix(engine.messages)
    assert shared.index("RUBRIC-TEXT") < shared.index("Capital of France?")
    assert shared.rstrip().endswith("# Response")  # everything up to the candidate is shared


def test_pointwise_samples_are_averaged():
    answers = ["Score: 6", "garbage", "Score: 8"]
    engine = FakeJudgeEngine(lambda message, i: answers[i])
    judge = PointwiseJudge(engine=engine, samples=3, seed=5)
    assert judge.score(["q"], ["a"]) == [7.0]
    assert engine.sampling[0].n == 3 and engine.sampling[0].temperature == 0.7 and engine.sampling[0].seed == 5
    assert judge.metrics()["parse_failures"] == 1


def test_long_responses_are_truncated_in_the_middle():
    engine = FakeJudgeEngine(lambda message, i: "Score: 5")
    PointwiseJudge(engine=engine, max_response_chars=40).score(["q"], ["START" + "x" * 500 + "END"])
    response = section(engine.messages[0], "Response")
    assert response.startswith("START") and response.endswith("END") and "truncated" in response
    assert len(response) < 80


# ---- pairwise --------------------------------------------------------------------------------------------------


def consistent_verdict(message: str, i: int) -> str:
    a, b = QUALITY[section(message, "Response A")], QUALITY[section(message, "Response B")]
    return "Winner: A" if a > b else "Winner: B" if b > a else "Winner: tie"


def test_pairwise_bradley_terry_from_both_orders():
    engine = FakeJudgeEngine(consistent_verdict)
    judge = PairwiseJudge(engine=engine, bt_prior=0.5)
    group = ["Paris.", "Lyon.", "It is Paris, the capital.", "Marseille."]
    scores = judge.score_groups(["Capital of France?"], [group])[0]
    assert len(engine.messages) == 2 * 6  # every pair, in both orders
    # The same comparisons by hand: (i, j, outcome of i) for both orders of every pair.
    expected_comparisons = []
    for i in range(4):
        for j in range(i + 1, 4):
            qi, qj = QUALITY[group[i]], QUALITY[group[j]]
            outcome = 1.0 if qi > qj else 0.0 if qi < qj else 0.5
            expected_comparisons += [(i, j, outcome), (j, i, 1.0 - outcome)]
    assert scores == pytest.approx(fit_bradley_terry(4, expected_comparisons, prior=0.5))
    assert scores[0] > scores[2] > scores[1] == pytest.approx(scores[3])  # Lyon and Marseille tie
    metrics = judge.metrics()
    assert metrics["pairs"] == 6 and metrics["agreement"] == 1.0 and metrics["ties"] == 2
    assert metrics["position_a_rate"] == pytest.approx(0.5)
    # Both orders of a pair are adjacent, so they share the cached task prefix.
    assert section(engine.messages[0], "Response A") == section(engine.messages[1], "Response B")


def test_pairwise_position_bias_cancels():
    engine = FakeJudgeEngine(lambda message, i: "[[A]]")  # always prefers whatever is shown first
    judge = PairwiseJudge(engine=engine)
    scores = judge.score_groups(["q"], [["x", "y", "z"]])[0]
    assert scores == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    metrics = judge.metrics()
    assert metrics["agreement"] == 0.0 and metrics["position_a_rate"] == 1.0


def test_pairwise_unreadable_verdicts_and_small_groups():
    def respond(message: str, i: int) -> str:
        return "hmm" if "Marseille." in message else consistent_verdict(message, i)

    judge = PairwiseJudge(engine=FakeJudgeEngine(respond))
    scores = judge.score_groups(["q", "q", "q"], [["Paris.", "Lyon.", "Marseille."], ["Paris."], []])
    assert scores[0][2] is None and scores[0][0] > scores[0][1]  # Marseille has no readable verdict
    assert scores[1] == [None] and scores[2] == []
    metrics = judge.metrics()
    assert metrics["parse_failures"] == 4 and metrics["judge_outputs"] == 6
    assert metrics["order_pairs"] == 1  # only Paris-Lyon was read in both orders


def test_pairwise_sampled_pairs():
    rng = random.Random(0)
    pairs = choose_pairs(6, 7, rng)
    assert len(pairs) == 7 == len(set(pairs)) and all(i < j for i, j in pairs)
    assert {c for p in pairs for c in p} == set(range(6))  # the ring reaches every candidate
    assert choose_pairs(6, 7, random.Random(0)) == pairs
    every = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    assert choose_pairs(4, None, rng) == choose_pairs(4, 100, rng) == every
    engine = FakeJudgeEngine(consistent_verdict)
    judge = PairwiseJudge(engine=engine, max_pairs=5, seed=3)
    group = ["Paris.", "Lyon.", "It is Paris, the capital.", "Marseille.", "I don't know."]
    scores = judge.score_groups(["q"], [group])[0]
    assert len(engine.messages) == 10 and all(s is not None for s in scores)
    assert scores[0] == max(scores) and scores[4] == min(scores)


# ---- group (RULER style) --------------------------------------------------------------------------------------


def group_answer(message: str, i: int) -> str:
    candidates = dict(re.findall(r"# Candidate (\d+)\n(.*?)\n\n", message, re.S))
    return "```json\n" + json.dumps({k: QUALITY[v] + i for k, v in candidates.items()}) + "\n```"


def test_group_judge_scores_every_candidate_in_one_prompt():
    engine = FakeJudgeEngine(group_answer)
    judge = GroupJudge(engine=engine, rubric="RUBRIC-TEXT")
    groups = [["Paris.", "Lyon.", "I don't know."], ["Marseille.", "It is Paris, the capital."]]
    scores = judge.score_groups(["Capital of France?", "Largest French city?"], groups)
    assert scores == [[9.0, 3.0, 1.0], [3.0, 7.0]]
    assert len(engine.messages) == 2
    message = engine.messages[0]
    assert message.index("RUBRIC-TEXT") < message.index("Capital of France?") < message.index("# Candidate 1")
    assert "candidates 1 to 3" in message
    judge_avg = GroupJudge(engine=FakeJudgeEngine(group_answer), samples=2, temperature=1.0)
    assert judge_avg.score_groups(["q"], [["Paris.", "Lyon."]]) == [[9.5, 3.5]]


def test_group_judge_missing_ids_and_garbage():
    answers = {0: '{"1": 8, "3": 2}', 1: "I like them all.", 2: '{"1": 99, "2": 4, "3": 5}'}
    engine = FakeJudgeEngine(lambda message, i: answers[int(re.search(r"TASK(\d)", message).group(1))])
    judge = GroupJudge(engine=engine)
    scores = judge.score_groups(["TASK0", "TASK1", "TASK2"], [["a", "b", "c"]] * 3)
    assert scores == [[8.0, None, 2.0], [None, None, None], [None, 4.0, 5.0]]
    metrics = judge.metrics()
    assert metrics["parse_failures"] == 1 and metrics["missing_scores"] == 2  # 1 missing id + 1 off the scale


# ---- construction ----------------------------------------------------------------------------------------------


def test_bad_parameters_are_clear_errors():
    engine = FakeJudgeEngine(lambda message, i: "")
    with pytest.raises(ValueError, match="exactly one of model="):
        PointwiseJudge()
    with pytest.raises(ValueError, match="temperature=0"):
        PointwiseJudge(engine=engine, samples=2, temperature=0.0)
    with pytest.raises(ValueError, match="min_score"):
        PointwiseJudge(engine=engine, min_score=5, max_score=5)
    with pytest.raises(ValueError, match="bt_prior"):
        PairwiseJudge(engine=engine, bt_prior=0)
    with pytest.raises(ValueError, match="max_pairs"):
        PairwiseJudge(engine=engine, max_pairs=0)
    with pytest.raises(ValueError, match="rubric"):
        GroupJudge(engine=engine, rubric="  ")
    with pytest.raises(ValueError, match="engine_config"):
        GroupJudge(engine=engine, engine_config={"block_size": 8})


def test_judges_show_the_chat_from_prompt_messages_not_a_rendered_prompt():
    rendered = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    single = [{"role": "user", "content": "Capital of France?"}]
    multi = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Capital of France?"}]
    engine = FakeJudgeEngine(lambda message, i: "Score: 5")
    PointwiseJudge(engine=engine).score([rendered, rendered], ["Paris.", "Paris."], prompt_messages=[single, multi])
    assert section(engine.messages[0], "Task") == "Capital of France?"
    assert "Answer in French." in engine.messages[1] and "<|im_start|>" not in "".join(engine.messages)
    engine = FakeJudgeEngine(group_answer)
    GroupJudge(engine=engine).score_groups([rendered], [["Paris."]], prompt_messages=[single])
    engine_pairs = FakeJudgeEngine(consistent_verdict)
    PairwiseJudge(engine=engine_pairs).score_groups([rendered], [["Paris.", "Lyon."]], prompt_messages=[single])
    assert all("<|im_start|>" not in m for m in engine.messages + engine_pairs.messages)


def test_judges_by_name_in_a_composite_report_their_counters():
    from tao_engine.scoring import build_composite, build_scorer

    engine = FakeJudgeEngine(lambda message, i: "Score: 6" if "Paris." in message else "no idea")
    composite = build_composite([
        {"name": "judge_pointwise", "engine": engine, "rubric": "Correct city.", "max_tokens": 64},
        {"name": "judge_group", "engine": FakeJudgeEngine(group_answer), "weight": 0.5},
        {"name": "judge_pairwise", "engine": FakeJudgeEngine(consistent_verdict), "max_pairs": 1, "weight": 0.0},
    ])
    report = composite.score_groups(["Capital of France?"], [["Paris.", "Lyon."]])
    assert report.per_scorer["judge_pointwise"] == [[6.0, None]]
    assert report.per_scorer["judge_group"] == [[9.0, 3.0]]
    assert report.scores[0][0] == pytest.approx(6.0 + 0.5 * 9.0)
    assert report.metrics["judge_pointwise/parse_failures"] == 1.0
    assert report.metrics["judge_pairwise/agreement"] == 1.0
    with pytest.raises(ValueError, match="unknown key"):
        build_scorer({"name": "judge_pointwise", "engine": engine, "rubrik": "typo"})
    with pytest.raises(ValueError, match="exactly one of model="):
        build_scorer({"name": "judge_group"})
