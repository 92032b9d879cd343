"""Multi-task TAO: each prompt's task picks its exploration and scorers, metrics come per task and per strategy,
eval reports per task and overall, and an unconfigured task fails before any work naming the file line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tao_engine.engine import EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.exploration.config import ExplorationConfig, TransformConfig
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.exploration.tasks import TaskConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.prompt_data import PromptRecord
from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import DataSection, RunSection, ScoringSection, TAOConfig, TrainSection
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.rl.test_exploration_strategies import ScriptedEngine, reasoner
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2


def math_reward(prompts, completions, **context):
    """Scorer of task 'math': 1 for the answer 5, else 0 (and it must only ever see math prompts)."""
    assert all("What is" in p for p in prompts), prompts
    return [float(c == "5") for c in completions]


def chat_reward(prompts, completions, **context):
    """Scorer of task 'chat': -1 for every candidate (and it must only ever see chat prompts)."""
    assert all("What is" not in p for p in prompts), prompts
    return [-1.0 for _ in completions]


def _spec(fn) -> dict:
    return {"name": f"tests.rl.test_exploration_tasks:{fn.__name__}"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Tokenizer:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    return Tokenizer.from_dir(
        write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)
    )


def _model(tokenizer):
    return helpers.tiny_model(seed=3, vocab_size=tokenizer.vocab_size, eos_token_id=EOS, max_position_embeddings=1024)


def _tasks() -> dict[str, TaskConfig]:
    return {
        "math": TaskConfig(scorers=(_spec(math_reward),), exploration={"strategy": "reason"}),
        "chat": TaskConfig(scorers=(_spec(chat_reward),), exploration={"transform": "identity"}),
    }


def test_each_task_is_explored_and_scored_its_own_way(tokenizer):
    tasks = _tasks()
    sampling = SamplingParams(n=3, max_tokens=16)
    routing = TaskRouting.from_config(ExplorationConfig(), tasks, ScoringSection(), sampling, run_scorer=None)
    assert routing.active and routing.tasks == ["chat", "math"]
    records = [PromptRecord("What is 2+3?", task="math"), PromptRecord("Hello there", task="chat"),
               PromptRecord("What is 1+4?", task="math")]
    engine = ScriptedEngine(reasoner, tokenizer)
    batch = routing.rollout_and_score(engine, _model(tokenizer), records)
    assert batch.prompt_texts == ["What is 2+3?", "Hello there", "What is 1+4?"]  # inference-time prompts, in order
    assert batch.completion_texts[0] == ["5", "6", ""] and batch.completion_texts[1] == ["plain0", "plain1", "plain2"]
    assert batch.rewards == [[1.0, 0.0, None], [-1.0, -1.0, -1.0], [1.0, 0.0, None]]  # failed transform: None
    m = batch.reward_metrics
    assert m["task/math/reward_mean"] == 0.5 and m["task/chat/reward_mean"] == -1.0 and m["task/math/prompts"] == 2
    assert m["exploration/candidates/reason"] == 6 and m["exploration/candidates/plain"] == 3
    assert m["exploration/failed_frac"] == pytest.approx(2 / 9)
    words = [sum(len(reasoner(f"What is {q}? Think step by step", j).split(" ")) for j in range(3))
             for q in ("2+3", "1+4")]
    assert m["exploration/tokens_per_prompt"] == pytest.approx((words[0] + 3 + words[1]) / 3)  # one token a word
    assert "task/math/math_reward/mean" in m and "task/chat/chat_reward/mean" in m  # each scorer, per task


def test_an_all_plain_batch_takes_todays_rollout_path(tokenizer):
    from tao_engine.engine import Engine

    sampling = SamplingParams(n=2, temperature=0.7, max_tokens=4, seed=1)
    routing = TaskRouting.from_config(ExplorationConfig(), {"a": TaskConfig(scorers=(_spec(chat_reward),))},
                                      ScoringSection(), sampling, run_scorer=None)
    model = _model(tokenizer)
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=16), tokenizer=tokenizer)
    batch = routing.rollout_and_score(engine, model, [PromptRecord("Hi", task="a")])
    assert batch.sampling.temperature == 0.7  # the engine's sampler log-probs, as the plain loop has them
    out = engine.generate(["Hi"], sampling)[0]
    assert batch.completion_token_ids[0] == [s.token_ids for s in out.samples]
    assert batch.sampler_logprobs[0] == [s.logprobs for s in out.samples]
    assert batch.reward_metrics["exploration/tokens_per_prompt"] == sum(len(s.token_ids) for s in out.samples)


def _tao_config(run_dir, data: DataSection) -> TAOConfig:
    return TAOConfig(
        sampling=SamplingParams(n=3, temperature=1.0, max_tokens=5),
        algorithm=AlgorithmConfig(name="grpo"),
        optim=OptimConfig(lr=1e-2),
        train=TrainSection(max_tokens_per_forward=512),
        engine=EngineConfig(kv_cache_bytes=16 * 2**20, block_size=16),
        run=RunSection(steps=2, output_dir=str(run_dir), seed=1, eval_max_tokens=4),
        data=data,
        exploration=ExplorationConfig(transform=TransformConfig(kind="identity"), max_tokens=6),
        tasks=_tasks(),
    )


def test_a_multi_task_tao_run_reports_per_task_metrics_and_eval(tmp_path, tokenizer):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "What is 2+3?", "task": "math"}, {"prompt": "Say hi", "task": "chat"},
        {"prompt": "What is 4+1?", "task": "math"}, {"prompt": "Name a color", "task": "chat"},
    ]))
    evals = tmp_path / "e.jsonl"
    evals.write_text(json.dumps({"prompt": "What is 1+1?", "task": "math", "answer": "2"}) + "\n"
                     + json.dumps({"prompt": "Say bye", "task": "chat"}) + "\n")
    cfg = _tao_config(tmp_path / "run", DataSection(prompts=str(prompts), eval=str(evals), prompts_per_step=4))
    torch.manual_seed(0)
    result = TAO(cfg, model=_model(tokenizer), tokenizer=tokenizer, progress=False).run()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward_mean" in r]
    assert len(steps) == 2
    for key in ("exploration_tokens_per_prompt", "score/task/math/reward_mean", "score/task/chat/reward_mean",
                "score/exploration/candidates/reason", "score/exploration/candidates/plain", "reward_mean"):
        assert key in steps[0], key
    assert steps[0]["score/task/chat/reward_mean"] == -1.0
    assert steps[0]["score/exploration/candidates/reason"] == 6 and steps[0]["score/exploration/candidates/plain"] == 6
    assert steps[0]["exploration_tokens_per_prompt"] > 0
    for ev in (result.eval_before, result.eval_after):
        assert set(ev) >= {"score", "accuracy", "task/math/score", "task/math/accuracy", "task/chat/score"}
        assert ev["task/chat/score"] == -1.0 and ev["accuracy"] == ev["task/math/accuracy"]
        assert ev["score"] == pytest.approx((ev["task/math/score"] - 1.0) / 2)


def test_an_unconfigured_task_fails_before_any_work_naming_the_line(tmp_path, tokenizer):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "2+2?", "task": "math"}) + "\n"
                       + json.dumps({"prompt": "SELECT?", "task": "sql"}) + "\n")
    cfg = _tao_config(tmp_path / "run", DataSection(prompts=str(prompts), prompts_per_step=2))
    tao = TAO(cfg, model=_model(tokenizer), tokenizer=tokenizer, progress=False)
    with pytest.raises(ValueError, match=r"p.jsonl:2: task 'sql' is not configured"):
        tao.run()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step ran


def parity_reward(prompts, completions, **context):
    return [float(len(c) % 2) for c in completions]


def test_a_single_task_reason_run_with_dapo_refills_explored_batches(tmp_path, tokenizer):
    cfg = dataclasses.replace(
        _tao_config(tmp_path / "run", DataSection(prompts_per_step=3)),
        tasks={}, algorithm=AlgorithmConfig(name="dapo"),
        scoring=ScoringSection(scorers=(_spec(parity_reward),)),
        exploration=ExplorationConfig(strategy="reason", transform=TransformConfig(kind="identity"), max_tokens=6),
    )
    torch.manual_seed(0)
    tao = TAO(cfg, model=_model(tokenizer), tokenizer=tokenizer, progress=False)
    result = tao.run(prompts=["Say hi", "Name a color", "Count to three", "Spell cat"])
    for step in result.history:
        assert step["score/exploration/candidates/reason"] > 0 and step["exploration_tokens_per_prompt"] > 0
        assert not any(key.startswith("score/task/") for key in step)
        assert step["groups_trained"] >= 0 and "reward_mean" in step
