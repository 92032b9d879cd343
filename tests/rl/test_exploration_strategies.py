"""Each exploration strategy's candidates (strategy, exploration prompt, raw output, transformed response, tokens)
against a scripted engine, and the strategies on the real engine with a tiny random model."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.engine.outputs import RequestMetrics, RequestOutput, SampleOutput
from tao_engine.rl.exploration.config import ExplorationConfig, MixedEntry, TransformConfig
from tao_engine.rl.exploration.explore import explore
from tao_engine.rl.exploration.templates import REASON_TEMPLATES
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir


class ScriptedEngine:
    """Stands in for `Engine`: answers each request with `reply(prompt text, sample index)`, one token per word, cut
    at max_tokens words; records every generate call (prompts, params)."""

    def __init__(self, reply: Callable[[str, int], str], tokenizer=None) -> None:
        self.reply = reply
        self.tokenizer = tokenizer
        self.eos_token_ids = frozenset({2})
        self.calls: list[tuple[list, list[SamplingParams]]] = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), list(params)))
        outputs = []
        for i, (prompt, sp) in enumerate(zip(prompts, params, strict=True)):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            samples = []
            for j in range(sp.n):
                words = self.reply(text, j).split(" ")
                kept = words[: sp.max_tokens]
                samples.append(SampleOutput(index=j, token_ids=list(range(3, 3 + len(kept))), text=" ".join(kept),
                                            finish_reason="stop" if len(kept) == len(words) else "length"))
            outputs.append(RequestOutput(str(i), text, [1, 2, 3], samples, RequestMetrics(0.0)))
        return outputs


def reasoner(text: str, j: int) -> str:
    """Reasons about 'What is a+b?' and ends with an answer line; every third sample forgets the answer line."""
    if "Think step by step" not in text:
        return f"plain{j}"
    if j % 3 == 2:
        return "I am not sure"
    a, b = (int(x) for x in text.split("What is ")[1].split("?")[0].split("+"))
    return f"{a} plus {b} makes {a + b + j}\nAnswer: {a + b + j}"


PROMPTS = ["What is 2+3?", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 4+4?"}]]


def test_plain_samples_the_inference_prompt_and_keeps_the_sampled_ids():
    engine = ScriptedEngine(reasoner)
    found = explore(engine, PROMPTS, ExplorationConfig(), SamplingParams(n=2, temperature=0.7, max_tokens=8))
    assert len(engine.calls) == 1 and engine.calls[0][0] == PROMPTS  # one batched call, the prompts as given
    for prompt, group in zip(PROMPTS, found, strict=True):
        assert [c.raw_output for c in group] == ["plain0", "plain1"]
        for c in group:
            assert (c.strategy, c.exploration_prompt, c.response, c.temperature) == ("plain", prompt, c.raw_output, 0.7)
            assert c.response_token_ids == (3,) and c.tokens == 1


def test_reason_templates_the_prompt_and_keeps_the_transformed_answer():
    engine = ScriptedEngine(reasoner)
    config = ExplorationConfig(strategy="reason", max_tokens=40)
    found = explore(engine, PROMPTS, config, SamplingParams(n=3, max_tokens=4))
    asked, params = engine.calls[0]
    assert asked[0] == REASON_TEMPLATES["step_by_step"].replace("{prompt}", "What is 2+3?")
    assert asked[1][0] == {"role": "system", "content": "Be brief."}  # a chat keeps its other turns
    assert asked[1][1]["content"].startswith("What is 4+4?\n\nThink step by step")
    assert all(p.max_tokens == 40 for p in params)  # [exploration] max_tokens, not [sampling]'s
    first = found[0]
    assert [c.response for c in first] == ["5", "6", None]  # sample 2 has no answer line: transform failed
    assert first[0].raw_output == "2 plus 3 makes 5\nAnswer: 5" and first[0].exploration_prompt == asked[0]
    assert first[0].tokens == len(first[0].raw_output.split(" ")) and first[2].failed
    assert all(c.strategy == "reason" and c.response_token_ids is None for g in found for c in g)
    assert [c.response for c in found[1]] == ["8", "9", None]


def test_refine_drafts_then_critiques_and_revises_in_batched_rounds():
    def reply(text: str, j: int) -> str:
        if text.startswith("Question:") and "Critique:" in text:  # revise
            return "fixed " + text.split("Draft answer:\n")[1].split("\n")[0] + "\nAnswer: 42"
        if text.startswith("Question:"):  # critique
            return "too short"
        return f"draft{j}"

    engine = ScriptedEngine(reply)
    config = ExplorationConfig(strategy="refine", refine_rounds=2)
    found = explore(engine, PROMPTS, config, SamplingParams(n=2, max_tokens=16))
    assert len(engine.calls) == 1 + 2 * 2  # draft, then critique + revise per round, each one batched call
    assert [len(call[0]) for call in engine.calls] == [2, 4, 4, 4, 4]  # P requests x n, then P*n requests x 1
    assert all(p.n == 1 for call in engine.calls[1:] for p in call[1])
    c = found[0][1]
    assert c.strategy == "refine" and c.response == "42"
    assert c.trace[0] == "draft1" and c.trace[1] == "too short" and c.trace[2] == "fixed draft1\nAnswer: 42"
    assert c.raw_output == c.trace[-1] == "fixed fixed draft1\nAnswer: 42"  # round 2 revised round 1's revision
    assert c.tokens == sum(len(t.split(" ")) for t in c.trace)
    assert "Critique:\ntoo short" in c.exploration_prompt and "What is 2+3?" in c.exploration_prompt
    assert found[1][0].exploration_prompt[0]["role"] == "system"


def test_mixed_runs_each_entry_at_its_temperature_and_records_strategies():
    engine = ScriptedEngine(reasoner)
    config = ExplorationConfig(strategy="mixed", mixed=(MixedEntry("plain", 0.3, 1), MixedEntry("reason", 1.2, 3)))
    found = explore(engine, PROMPTS, config, SamplingParams(n=4, max_tokens=20))
    assert [[p.temperature for p in call[1]] for call in engine.calls] == [[0.3, 0.3], [1.2, 1.2]]
    assert [[p.n for p in call[1]] for call in engine.calls] == [[1, 1], [3, 3]]
    assert [c.strategy for c in found[0]] == ["plain", "reason", "reason", "reason"]
    assert [c.response for c in found[0]] == ["plain0", "5", "6", None]


def test_mixed_never_spends_more_than_the_budget_and_skips_what_does_not_fit():
    engine = ScriptedEngine(lambda text, j: " ".join(["w"] * 10))  # 10 tokens unless capped
    config = ExplorationConfig(
        strategy="mixed", tokens_budget_per_prompt=25,
        mixed=(MixedEntry("plain", 1.0, 2), MixedEntry("refine", 1.0, 1), MixedEntry("plain", 1.0, 3)),
        transform=TransformConfig(kind="identity"),
    )
    found = explore(engine, ["a", "b"], config, SamplingParams(n=6, max_tokens=10))
    for group in found:
        assert len(group) == 6 and sum(c.tokens for c in group) <= 25
        assert [c.tokens for c in group[:2]] == [10, 10]  # 25 // 2 = 12, capped at max_tokens = 10
        assert group[2].tokens == 3 and group[2].strategy == "refine"  # 5 left // 3 generations -> 1 token each
        for c in group[3:]:  # 2 left // 3 candidates = 0 tokens each: skipped, slots kept, no response
            assert c.skipped and c.failed and c.tokens == 0 and c.strategy == "plain"
    assert [p.max_tokens for p in engine.calls[1][1]] == [1, 1]
    assert len(engine.calls) == 1 + 3  # the skipped entry never reached the engine


def test_token_id_prompts_cannot_be_templated():
    with pytest.raises(ValueError, match="token-id prompts can only use strategy 'plain'"):
        explore(ScriptedEngine(reasoner), [[5, 6, 7]], ExplorationConfig(strategy="reason"), SamplingParams())
    with pytest.raises(ValueError, match="token-id prompts"):
        explore(ScriptedEngine(reasoner), [[5, 6, 7]], ExplorationConfig(strategy="refine"), SamplingParams())


class CountingEngine:
    """The real engine, counting the tokens each generate call produced."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.tokenizer, self.generated, self.calls = engine, engine.tokenizer, 0, 0

    def generate(self, prompts, params):
        outputs = self.engine.generate(prompts, params)
        self.generated += sum(len(s.token_ids) for out in outputs for s in out.samples)
        self.calls += 1
        return outputs


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory) -> Engine:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    directory = write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)
    tokenizer = Tokenizer.from_dir(directory)
    model = helpers.tiny_model(seed=1, vocab_size=tokenizer.vocab_size, eos_token_id=2, max_position_embeddings=1024)
    return Engine(model, EngineConfig(kv_cache_bytes=16 * 2**20, block_size=16), tokenizer=tokenizer)


def test_strategies_on_the_real_engine_count_every_generated_token(tiny_engine):
    sampling = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=3)
    identity = TransformConfig(kind="identity")
    for strategy, stages in (("reason", 1), ("refine", 3)):
        engine = CountingEngine(tiny_engine)
        config = ExplorationConfig(strategy=strategy, transform=identity)
        found = explore(engine, ["Say hello", "Name a fruit"], config, sampling)
        assert [len(g) for g in found] == [2, 2] and engine.calls == stages
        assert sum(c.tokens for g in found for c in g) == engine.generated
        assert all(1 <= c.tokens <= 6 * stages for g in found for c in g)
        assert all(c.response == (c.raw_output.strip() or None) for g in found for c in g)
    budget = ExplorationConfig(strategy="mixed", transform=identity, tokens_budget_per_prompt=7,
                               mixed=(MixedEntry("reason", 1.0, 1), MixedEntry("refine", 0.5, 1)))
    found = explore(tiny_engine, ["Say hello"], budget, sampling)
    assert sum(c.tokens for c in found[0]) <= 7 and [c.strategy for c in found[0]] == ["reason", "refine"]
