"""TAO's central claim on a tiny model: trained from `reason`-strategy candidates (reasoning, then 'Answer: x'), the
model answers the inference-time prompt directly, in the answer's format and without the reasoning.

Exploration runs on a scripted engine that reasons the way a capable model would (a tiny random model cannot), while
the conversion to the inference-time prompt, the label-free scoring (majority vote), the best-of-N SFT update and
the final greedy answers all run on the real tiny model and engine."""

from __future__ import annotations

import pytest
import torch

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.routing import TaskRouting
from tao_engine.rl.prompt_data import PromptRecord
from tao_engine.rl.trainer import TrainConfig, train_step
from tao_engine.scoring.registry import build_composite
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.rl.test_exploration_strategies import ScriptedEngine
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2  # <|im_end|>
QUESTIONS = {"What is 2+3?": "5", "What is 4+4?": "8", "What is 1+6?": "7"}
REASONING_MARKERS = ("Answer", "step", "plus", "makes")


def reason_like_a_capable_model(text: str, j: int) -> str:
    """Step-by-step reasoning ending in 'Answer: <sum>'; sample 2 slips (a wrong sum), sample 4 never concludes."""
    a, b = (int(x) for x in text.split("What is ")[1].split("?")[0].split("+"))
    if j == 4:
        return f"Let me think step by step. {a} plus {b} makes"
    total = a + b + (1 if j == 2 else 0)
    return f"Let me think step by step. {a} plus {b} makes {total}.\nAnswer: {total}"


def _greedy(engine: Engine, prompts: list[str]) -> list[str]:
    outs = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=12))
    return [out.samples[0].text for out in outs]


@pytest.mark.parametrize("algorithm", ["bon_sft", "grpo"])
def test_a_model_tuned_on_reason_candidates_answers_directly_without_the_reasoning(tmp_path, algorithm):
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    tokenizer = Tokenizer.from_dir(write_tokenizer_dir(tmp_path / "tok", train_byte_level_bpe(CHATML_SPECIALS), config))
    torch.manual_seed(0)
    model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, eos_token_id=EOS).train()
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * 2**20, block_size=16), tokenizer=tokenizer)
    prompts = list(QUESTIONS)
    assert _greedy(engine, prompts) != list(QUESTIONS.values())  # the random model does not know yet

    explorer = ScriptedEngine(reason_like_a_capable_model, tokenizer)
    routing = TaskRouting(
        {None: ExplorationConfig(strategy="reason")},  # transform: the text after the last "Answer:"
        {None: build_composite([{"name": "majority_vote"}])},  # label-free: agree with the group's majority
        SamplingParams(n=5, temperature=1.0, max_tokens=64),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3 if algorithm == "bon_sft" else 1e-2)
    train = TrainConfig(algorithm=AlgorithmConfig(name=algorithm), max_tokens_per_forward=512)
    records = [PromptRecord(p) for p in prompts]
    for _ in range(40):
        batch = routing.rollout_and_score(explorer, model, records)
        train_step(model, batch, optimizer, train)
    # The candidates were long reasoning traces; what was trained is the inference-time prompt -> the answer alone.
    assert batch.completion_texts[0][:4] == ["5", "5", "6", "5"] and batch.rewards[0] == [1.0, 1.0, 0.0, 1.0, None]
    assert batch.prompt_texts == prompts

    model.eval()
    answers = _greedy(engine, prompts)  # the very module, served by the engine at the base model's cost
    assert answers == list(QUESTIONS.values()), answers
    outs = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_tokens=12))
    for out in outs:
        assert out.samples[0].finish_reason == "stop" and out.samples[0].token_ids[-1] == EOS  # stops right there
        assert not any(marker in out.samples[0].text for marker in REASONING_MARKERS)
