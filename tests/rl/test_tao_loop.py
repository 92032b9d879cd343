"""The TAO loop end to end on a tiny random model: metrics per step, checkpoints, a final HF-layout model, the reward
rising on a toy task, and a run killed midway that resumes to exactly the uninterrupted result."""

from __future__ import annotations

import json

import pytest
import torch

from tao_engine.engine import EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import DataSection, RunSection, TAOConfig, TrainSection
from tests import helpers

VOCAB = 101
TARGET = 7
PROMPTS = [[3, 14, 15, 92], [65, 35], [89, 79, 32, 38, 46], [26, 43], [11, 12, 13], [50, 60, 70, 80, 90, 99]]


class TargetTokenScorer:
    """A group scorer that reads the token ids the rollout hands over as context: fraction of TARGET tokens."""

    name = "target_token"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call

    def score_groups(self, prompts, groups, completion_token_ids=None, **context):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the run is killed here
        return [[sum(t == TARGET for t in c) / max(1, len(c)) for c in group] for group in completion_token_ids]


def _config(run_dir, steps: int = 4, algorithm: str = "grpo") -> TAOConfig:
    return TAOConfig(
        sampling=SamplingParams(n=6, temperature=1.0, max_tokens=6, ignore_eos=True),
        algorithm=AlgorithmConfig(name=algorithm),
        optim=OptimConfig(lr=2e-2),
        train=TrainSection(max_tokens_per_forward=128),
        engine=EngineConfig(kv_cache_bytes=8 * 2**20, block_size=4),
        run=RunSection(steps=steps, output_dir=str(run_dir), checkpoint_every=2, keep_last=2, seed=5),
        data=DataSection(prompts_per_step=3),
    )


def _model() -> torch.nn.Module:
    return helpers.tiny_model(0, eos_token_id=VOCAB - 1).train()


def test_run_logs_checkpoints_saves_and_raises_the_reward(tmp_path):
    torch.manual_seed(0)
    cfg = _config(tmp_path / "run", steps=10)
    tao = TAO(cfg, model=_model(), scorer=_wrap(TargetTokenScorer()), progress=False)
    result = tao.run(prompts=PROMPTS)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    for key in ("reward_mean", "loss", "grad_norm", "clip_fraction", "generate_tok/s", "train_s", "peak_memory_mb",
                "score/target_token/mean"):
        assert key in records[0], key
    first = sum(r["reward_mean"] for r in records[:3]) / 3
    last = sum(r["reward_mean"] for r in records[-3:]) / 3
    assert last > first + 0.1, (first, last)
    assert (result.final_model_dir / "config.json").is_file()
    assert [p.name for p in sorted((tmp_path / "run").glob("checkpoint-*"))] == ["checkpoint-10", "checkpoint-8"]
    assert any(p.name == "reward_mean.png" for p in result.plots)


def _wrap(scorer):
    from tao_engine.scoring.composite import CompositeScorer, WeightedScorer

    return CompositeScorer([WeightedScorer(scorer)])


@pytest.mark.parametrize("algorithm", ["grpo", "dapo"])
def test_a_killed_run_resumes_exactly(tmp_path, algorithm):
    straight = TAO(_config(tmp_path / "a", algorithm=algorithm), model=_model(), scorer=_wrap(TargetTokenScorer()),
                   progress=False)
    straight.run(prompts=PROMPTS)

    killed = TAO(_config(tmp_path / "b", algorithm=algorithm), model=_model(),
                 scorer=_wrap(TargetTokenScorer(fail_on_call=3 if algorithm == "grpo" else None)), progress=False)
    if algorithm == "grpo":
        with pytest.raises(KeyboardInterrupt):
            killed.run(prompts=PROMPTS)  # dies in step 3, after the step-2 checkpoint
    else:
        # DAPO may resample within a step: count the scorer calls of two steps, then die on the next one.
        scorer = killed.scorer.entries[0].scorer
        calls_per_step = _calls_for_two_steps(tmp_path, algorithm)
        scorer.fail_on_call = calls_per_step + 1
        with pytest.raises(KeyboardInterrupt):
            killed.run(prompts=PROMPTS)
    resumed = TAO(_config(tmp_path / "b", algorithm=algorithm), model=_model(), scorer=_wrap(TargetTokenScorer()),
                  progress=False)
    resumed.run(prompts=PROMPTS, resume=True)

    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    assert [r["reward_mean"] for r in log_a] == [r["reward_mean"] for r in log_b]


def _calls_for_two_steps(tmp_path, algorithm) -> int:
    scorer = TargetTokenScorer()
    probe = TAO(_config(tmp_path / "probe", steps=2, algorithm=algorithm), model=_model(), scorer=_wrap(scorer),
                progress=False)
    probe.run(prompts=PROMPTS)
    return scorer.calls
