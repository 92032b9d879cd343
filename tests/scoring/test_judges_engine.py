"""The judges on the real in-process engine: a tiny random model (gibberish answers: None and counters, never a
crash; prompts share their cached prefix) and a SmolLM2-135M-Instruct smoke test."""

from __future__ import annotations

import pytest

from tao_engine.engine import Engine, EngineConfig
from tao_engine.scoring.judges import GroupJudge, PairwiseJudge, PointwiseJudge
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

PROMPTS = ["What is the capital of France?", "Add 2 and 3."]
GROUPS = [["Paris.", "Lyon is the capital.", "I think it is Paris."], ["5", "6"]]


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    backend = train_byte_level_bpe(CHATML_SPECIALS)
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tokenizer = Tokenizer.from_dir(write_tokenizer_dir(tmp_path_factory.mktemp("tok"), backend, config))
    model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, max_position_embeddings=2048)
    return Engine(model, EngineConfig(kv_cache_bytes=16 * 2**20, block_size=16), tokenizer=tokenizer)


def test_pointwise_on_a_tiny_random_model_gives_none_and_counts(tiny_engine: Engine):
    judge = PointwiseJudge(engine=tiny_engine, max_tokens=12)
    flat_prompts = [p for p, g in zip(PROMPTS, GROUPS, strict=True) for _ in g]
    tiny_engine.reset_stats()
    scores = judge.score(flat_prompts, [c for g in GROUPS for c in g])
    assert scores == [None] * 5
    metrics = judge.metrics()
    assert metrics["judge_calls"] == 5 and metrics["parse_failures"] == 5 and metrics["parse_failure_rate"] == 1.0
    # The candidates of one task share instructions + task prompt: the prefix cache serves part of their prompts.
    assert tiny_engine.stats()["prefix_cache_hit_rate"] > 0


def test_pairwise_and_group_on_a_tiny_random_model(tiny_engine: Engine):
    pairwise = PairwiseJudge(engine=tiny_engine, max_tokens=12)
    assert pairwise.score_groups(PROMPTS, GROUPS) == [[None] * 3, [None] * 2]
    metrics = pairwise.metrics()
    assert metrics["pairs"] == 4 and metrics["judge_outputs"] == 8 and metrics["parse_failures"] == 8
    assert metrics["agreement"] == 0.0

    group = GroupJudge(engine=tiny_engine, max_tokens=12, samples=2, temperature=1.0, seed=1)
    assert group.score_groups(PROMPTS, GROUPS) == [[None] * 3, [None] * 2]
    metrics = group.metrics()
    assert metrics["judge_calls"] == 2 and metrics["judge_outputs"] == 4 and metrics["parse_failures"] == 4


def test_a_prompt_longer_than_the_judge_context_is_a_request_error(tiny_engine: Engine):
    small = Engine(tiny_engine.model, EngineConfig(kv_cache_bytes=4 * 2**20, max_model_len=64),
                   tokenizer=tiny_engine.tokenizer)
    judge = PointwiseJudge(engine=small, max_tokens=4)
    assert judge.score(["q"], ["a long answer " * 30]) == [None]
    metrics = judge.metrics()
    assert metrics["request_errors"] == 1 and metrics["parse_failures"] == 0


@pytest.mark.slow
def test_smollm2_judge_smoke(smollm2_ours):
    model, tokenizer = smollm2_ours
    engine = Engine(model, EngineConfig(kv_cache_bytes=256 * 2**20), tokenizer=tokenizer)
    prompts = ["What is the capital of France?"]
    group = ["The capital of France is Paris.", "The capital of France is Berlin."]

    pointwise = PointwiseJudge(engine=engine, max_tokens=32)
    scores = pointwise.score(prompts * 2, group)
    metrics = pointwise.metrics()
    assert all(s is None or 0 <= s <= 10 for s in scores)
    assert metrics["judge_outputs"] == 2 and metrics["parse_failures"] == sum(s is None for s in scores)

    pairwise = PairwiseJudge(engine=engine, max_tokens=32)
    pair_scores = pairwise.score_groups(prompts, [group])[0]
    metrics = pairwise.metrics()
    assert metrics["judge_outputs"] == 2 and 0 <= metrics["parse_failures"] <= 2
    assert all(s is None or abs(s) < 10 for s in pair_scores)

    ruler = GroupJudge(engine=engine, max_tokens=32)
    group_scores = ruler.score_groups(prompts, [group])[0]
    assert len(group_scores) == 2 and all(s is None or 0 <= s <= 10 for s in group_scores)
    assert ruler.metrics()["judge_outputs"] == 1
