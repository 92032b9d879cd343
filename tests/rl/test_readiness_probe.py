"""The readiness probe: its label-free and labeled statistics on hand-made groups, the verdict's rules (each reason
with its fix), `TAO.probe` with a labeled file on a tiny model, and the `probe` command's output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tao_engine.cli import main
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.readiness.statistics import labeled_statistics, unlabeled_statistics
from tao_engine.rl.readiness.verdict import GO, NO_GO, WEAK, verdict
from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import TAOConfig
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl


def test_unlabeled_statistics_of_hand_made_groups():
    rewards = [[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [1.0, None, 0.0, 1.0]]
    keys = [["a", "a", "b", "c"], ["x", "x", "x", "x"], ["a", None, "d", "a"]]
    per_scorer = [{"format": [1.0, 1.0, 0.0, 0.0]}, {"format": [1.0] * 4}, {"format": [1.0, None, 0.0, 1.0]}]
    stats = unlabeled_statistics(rewards, keys, per_scorer, GuardsSection())
    assert stats["prompts"] == 3 and stats["n"] == 4
    assert stats["zero_variance_frac"] == pytest.approx(1 / 3) and stats["gradient_groups_frac"] == pytest.approx(2 / 3)
    assert stats["none_frac"] == pytest.approx(1 / 12)
    assert stats["majority_share_mean"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert stats["no_answer_frac"] == pytest.approx((0 + 0 + 0.25) / 3)
    assert stats["dominant_answer_share"] == pytest.approx(2 / 3)  # "a" tops groups 1 and 3
    assert stats["scorers"]["format"]["pass_rate"] == pytest.approx(8 / 11)
    guarded = unlabeled_statistics(rewards, keys, per_scorer, GuardsSection(min_majority_share=0.6))
    assert guarded["gradient_groups_frac"] == 0.0  # both varying groups have a top share of 0.5


def test_labeled_statistics_pass_at_k_majority_and_pair_accuracy():
    rewards = [[1.0, 0.0, 0.5], [0.2, 0.9, 0.9], [0.0, 0.0, 0.0]]
    keys = [["7", "8", "7"], ["1", "2", "2"], ["5", "5", "6"]]
    correct = [[True, False, True], [True, False, False], [False, False, False]]
    stats = labeled_statistics(rewards, keys, correct, greedy_correct=[True, False, False])
    assert stats["pass_at_1"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert stats["pass_at_k"] == pytest.approx(2 / 3) and stats["k"] == 3
    assert stats["maj_at_k"] == pytest.approx(1 / 3)  # group 1's majority "7" is right; group 2's "2" is wrong
    assert stats["pairs"] == 4 and stats["pair_accuracy"] == pytest.approx(2 / 4)  # (1>0, .5>0) right, (.2<.9 x2)
    # group 1's top (1.0) is right; group 2's tied tops (0.9, 0.9) are both wrong; group 3 all tied at 0, none right
    assert stats["top_reward_correct"] == pytest.approx(1 / 3) and stats["greedy_accuracy"] == pytest.approx(1 / 3)


def _stats(**changes):
    base = {"prompts": 32, "zero_variance_frac": 0.1, "none_frac": 0.0, "gradient_groups_frac": 0.9,
            "majority_share_mean": 0.6, "dominant_answer_share": 0.1}
    return {**base, **changes}


def _labeled(**changes):
    base = {"pass_at_1": 0.3, "pass_at_k": 0.7, "k": 8, "maj_at_k": 0.5, "pair_accuracy": 0.8, "pairs": 50,
            "top_reward_correct": 0.5}
    return {**base, **changes}


@pytest.mark.parametrize(("stats", "labeled", "level", "says"), [
    (_stats(), _labeled(), GO, None),
    (_stats(zero_variance_frac=0.87, gradient_groups_frac=0.13), None, NO_GO,
     "87% of groups have equal rewards: no learning signal there; fix: raise [sampling] temperature or n"),
    (_stats(none_frac=0.5), None, WEAK, "the scorers gave no score to 50% of the candidates"),
    (_stats(majority_share_mean=0.2), None, WEAK, "votes are scattered"),
    (_stats(dominant_answer_share=0.8), None, WEAK, "one answer is the majority answer on 80% of the prompts"),
    (_stats(), _labeled(pass_at_k=0.05), NO_GO, "finds a right answer for only 5% of the labeled prompts"),
    (_stats(), _labeled(pass_at_k=0.2), WEAK, "with 8 samples"),
    (_stats(), _labeled(pair_accuracy=0.5), NO_GO, "ranks a right answer above a wrong one in 50% of 50 pairs"),
    (_stats(), _labeled(pair_accuracy=0.5, pairs=4), GO, None),  # too few pairs to judge the reward
    (_stats(), _labeled(maj_at_k=0.2), WEAK, "the majority answer is right less often"),
    (_stats(), _labeled(greedy_accuracy=0.2, top_reward_correct=0.25), WEAK,
     "the reward's pick among 8 samples is right 25% of the time and the greedy answer 20%"),
    (_stats(), _labeled(greedy_accuracy=0.2, top_reward_correct=0.45), GO, None),  # headroom over greedy
])
def test_verdict_rules(stats, labeled, level, says):
    result = verdict(stats, labeled)
    assert result.level == level
    if says is None:
        assert not result.findings and result.text().startswith("verdict: go")
    else:
        assert says in result.text()


def test_votes_that_do_not_matter_are_not_judged():
    assert verdict(_stats(majority_share_mean=0.1), None, votes_matter=False).level == GO
    assert verdict(_stats(majority_share_mean=0.1), None, votes_matter=True).level == WEAK
    # labels measured the reward itself: a right answer ranks first often enough, whatever the votes look like
    assert verdict(_stats(majority_share_mean=0.1), _labeled(), votes_matter=True).level == GO


PROMPTS = [{"prompt": p} for p in ("What is 2+2?", "Name a colour.", "Hi", "Say yes.", "Count to three.")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


def test_tao_probe_with_a_labeled_file_keeps_labels_from_the_scorers(model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    labeled = write_jsonl(tmp_path / "labeled.jsonl", [{**p, "answer": "4"} for p in PROMPTS[:3]])
    table = tune_table(model_dir, prompts, tmp_path / "run", scorer="tests.step_scorers:SameAnswerVote")
    tao = TAO(TAOConfig.from_dict(table), progress=False)
    before = tao.engine.generator.get_state()
    report = tao.probe(labeled=str(labeled))
    assert report.unlabeled["prompts"] == 3 and report.labeled is not None and report.labeled["k"] == 3
    assert 0.0 <= report.labeled["pass_at_k"] <= 1.0 and "greedy_accuracy" in report.labeled
    assert report.unlabeled["dominant_answer_share"] == 1.0  # the scorer's answer key "A" tops every prompt
    assert tao.engine.generator.get_state().equal(before)  # probing leaves the run's samples as they were
    report_json = json.loads(report.to_json())
    assert report_json["verdict"] == report.verdict.level and "labeled" in report_json
    with pytest.raises(ValueError, match="answer"):
        tao.probe(labeled=str(prompts))  # a "labeled" file without answers is an error naming it


def test_probe_command_prints_the_verdict_and_writes_json(model_dir, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    config = to_toml(tune_table(model_dir, prompts, tmp_path / "run"), tmp_path / "tao.toml")
    code = main(["probe", "--config", str(config), "--probe.prompts", "4", "--output", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert "readiness probe: 4 prompts x 3 samples" in out and "verdict: " in out
    report = json.loads((tmp_path / "r.json").read_text())
    # The tiny model's 4-token completions all score alike on "length": no gradient anywhere, so no-go, exit 3.
    assert report["unlabeled"]["zero_variance_frac"] == 1.0 and report["verdict"] == NO_GO and code == 3
    assert main(["probe", "--config", str(config), "--probe.prompts", "0"]) == 2
    assert "[probe] prompts must be an integer >= 1" in capsys.readouterr().err
