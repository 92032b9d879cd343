"""Self-certainty: the chunked teacher-forced value against a direct fp64 computation, the chat rendering of text
inputs, the engine's own module, and the cheap mean_logprob option."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tao_engine import ForwardBatch
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.scoring.self_certainty import (
    SelfCertaintyScorer,
    self_certainty_of_logits,
    teacher_forced_self_certainty,
)
from tao_engine.tokenizer import Tokenizer
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir
from tests.tolerances import check


def fp64_self_certainty(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """The definition, plainly: mean over completion tokens of -log V - mean_v log p_t(v), all in float64."""
    double = copy.deepcopy(model).double()
    ids = prompt + completion
    with torch.no_grad():
        hidden = double(torch.tensor(ids), ForwardBatch.for_sequences([len(ids)]))
        logp = torch.log_softmax(double.compute_logits(hidden), dim=-1)  # [T, V] float64
    vocab = logp.shape[-1]
    first = max(len(prompt), 1)  # position of the first predicted completion token
    values = [-math.log(vocab) - logp[t - 1].mean().item() for t in range(first, len(ids))]
    return sum(values) / len(values)


def random_pairs(count: int, vocab: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, vocab, (int(n),), generator=g).tolist() for n in torch.randint(1, 30, (count,),
                                                                                                 generator=g)]
    completions = [torch.randint(0, vocab, (int(n),), generator=g).tolist() for n in torch.randint(1, 20, (count,),
                                                                                                     generator=g)]
    return prompts, completions


class LogitRowsRecorder(torch.nn.Module):
    """A test double around a decoder that records how many rows each compute_logits call gets."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.rows: list[int] = []

    def forward(self, input_ids, batch):
        return self.inner(input_ids, batch)

    def compute_logits(self, hidden):
        self.rows.append(hidden.shape[0])
        return self.inner.compute_logits(hidden)


@pytest.mark.parametrize("max_batch_tokens,chunk_tokens", [(4096, 4096), (37, 7), (1, 1)])
def test_teacher_forced_equals_fp64_definition(max_batch_tokens: int, chunk_tokens: int):
    model = helpers.tiny_model(seed=1)
    prompts, completions = random_pairs(7, model.config.vocab_size, seed=2)
    recorder = LogitRowsRecorder(model)
    ours = teacher_forced_self_certainty(recorder, prompts, completions, max_batch_tokens, chunk_tokens)
    expected = [fp64_self_certainty(model, p, c) for p, c in zip(prompts, completions, strict=True)]
    check("self_certainty", torch.tensor(ours), torch.tensor(expected), model=model, prompts=prompts,
          completions=completions)
    assert max(recorder.rows) <= chunk_tokens  # never more than a chunk of vocabulary-wide rows at once
    assert sum(recorder.rows) == sum(len(c) for c in completions)
    assert len(set(ours)) == len(ours) and all(v > 0 for v in ours)  # KL to uniform is positive for real models


def test_edge_cases_empty_completion_and_empty_prompt():
    model = helpers.tiny_model(seed=1)
    ours = teacher_forced_self_certainty(model, [[3, 4], [], [], [5]], [[], [9, 8, 7], [6], [11]])
    assert ours[0] is None and ours[2] is None  # nothing predicted
    expected = [fp64_self_certainty(model, [], [9, 8, 7]), fp64_self_certainty(model, [5], [11])]
    check("self_certainty", torch.tensor([ours[1], ours[3]]), torch.tensor(expected), model=model, prompts=[[], [5]],
          completions=[[9, 8, 7], [11]])


def test_self_certainty_of_logits_limits():
    vocab = 129
    uniform = torch.zeros(3, vocab)
    # exactly 0 in real arithmetic: lse = log V, mean 0; fp32 leaves the roundings of log V's sum and difference
    value = self_certainty_of_logits(uniform)
    check("self_certainty_of_logits", value, torch.zeros(3, dtype=torch.float64), logits=uniform)
    peaked = torch.full((1, vocab), -1e4)
    peaked[0, 5] = 0.0
    # p -> one-hot: KL(U || p) -> infinity; with finite logits it equals lse - mean(z) - log V exactly.
    z = peaked.double()
    exact = torch.logsumexp(z, -1) - z.mean(-1) - math.log(vocab)
    check("self_certainty_of_logits", self_certainty_of_logits(peaked), exact, logits=peaked)
    assert self_certainty_of_logits(peaked).item() > 100 * self_certainty_of_logits(torch.randn(1, vocab)).item()


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    backend = train_byte_level_bpe(CHATML_SPECIALS)
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    return Tokenizer.from_dir(write_tokenizer_dir(tmp_path_factory.mktemp("tok"), backend, config))


def test_scorer_on_text_renders_the_prompt_as_the_engine_does(chat_tokenizer: Tokenizer):
    model = helpers.tiny_model(seed=4, vocab_size=chat_tokenizer.vocab_size, eos_token_id=2)
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4), tokenizer=chat_tokenizer)
    scorer = SelfCertaintyScorer(engine=engine, chunk_tokens=5)
    assert scorer.model is engine.model  # the policy itself, not a copy
    prompts, completions = ["What is 2 + 2?", "Say hi."], ["It is 4.", "Hello there, friend!"]
    scores = scorer.score(prompts, completions)
    for prompt, completion, score in zip(prompts, completions, scores, strict=True):
        out = engine.generate([[{"role": "user", "content": prompt}]], SamplingParams(max_tokens=1))[0]
        completion_ids = chat_tokenizer.encode(completion, add_special_tokens=False)
        expected = fp64_self_certainty(model, out.prompt_token_ids, completion_ids)
        check("self_certainty", torch.tensor([score]), torch.tensor([expected]), model=model,
              prompts=[out.prompt_token_ids], completions=[completion_ids])


def test_scorer_uses_generated_token_ids_from_context(chat_tokenizer: Tokenizer):
    model = helpers.tiny_model(seed=4, vocab_size=chat_tokenizer.vocab_size, eos_token_id=2)
    engine = Engine(model, EngineConfig(kv_cache_bytes=4 * 2**20, block_size=4), tokenizer=chat_tokenizer)
    outs = engine.generate([[{"role": "user", "content": "Count to three."}]],
                           SamplingParams(n=3, temperature=1.0, max_tokens=9, seed=1))
    samples = outs[0].samples
    prompt_ids = [outs[0].prompt_token_ids] * 3
    completion_ids = [s.token_ids for s in samples]
    scorer = SelfCertaintyScorer(model=model, tokenizer=chat_tokenizer)
    scores = scorer.score(["ignored"] * 3, [s.text for s in samples], prompt_token_ids=prompt_ids,
                          completion_token_ids=completion_ids)
    expected = [fp64_self_certainty(model, p, c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    check("self_certainty", torch.tensor(scores), torch.tensor(expected), model=model, prompts=prompt_ids,
          completions=completion_ids)
    cheap = SelfCertaintyScorer(method="mean_logprob").score(["p"] * 3, [s.text for s in samples],
                                                             logprobs=[s.raw_logprobs for s in samples])
    assert cheap == pytest.approx([sum(s.raw_logprobs) / len(s.raw_logprobs) for s in samples])


def test_mean_logprob_and_errors():
    scorer = SelfCertaintyScorer(method="mean_logprob")
    assert scorer.score(["a", "b", "c"], ["x", "y", ""], logprobs=[[-1.0, -3.0], [-0.5], []]) == [-2.0, -0.5, None]
    with pytest.raises(ValueError, match="needs context logprobs"):
        scorer.score(["a"], ["x"])
    with pytest.raises(ValueError, match="needs the policy"):
        SelfCertaintyScorer()
    with pytest.raises(ValueError, match="method must be one of"):
        SelfCertaintyScorer(method="entropy")
    with pytest.raises(ValueError, match="need a tokenizer"):
        SelfCertaintyScorer(model=helpers.tiny_model()).score(["a"], ["b"])


def test_score_groups_reads_per_prompt_context_like_the_composite_passes_it(chat_tokenizer: Tokenizer):
    model = helpers.tiny_model(seed=4, vocab_size=chat_tokenizer.vocab_size, eos_token_id=2)
    scorer = SelfCertaintyScorer(model=model, tokenizer=chat_tokenizer, chunk_tokens=3)
    prompt_ids = [[1, 5, 9], [2, 7]]
    completion_ids = [[[11, 12], [13, 14, 15], [16]], [[17, 18, 19]]]
    groups = [["x", "y", "z"], ["w"]]
    out = scorer.score_groups(["p", "q"], groups, prompt_token_ids=prompt_ids, completion_token_ids=completion_ids,
                              db_path=["a.db", "b.db"])  # another scorer's context is ignored
    expected = [[fp64_self_certainty(model, prompt_ids[g], c) for c in completion_ids[g]] for g in range(2)]
    assert [len(o) for o in out] == [3, 1]
    for g, (got, want) in enumerate(zip(out, expected, strict=True)):
        check("self_certainty", torch.tensor(got), torch.tensor(want), model=model,
              prompts=[prompt_ids[g]] * len(want), completions=completion_ids[g])
    cheap = SelfCertaintyScorer(method="mean_logprob").score_groups(["p"], [["x", "y"]],
                                                                    logprobs=[[[-1.0], [-2.0, -4.0]]])
    assert cheap == [[-1.0, -3.0]]
    with pytest.raises(ValueError, match="one per candidate"):
        scorer.score_groups(["p"], [["x", "y"]], completion_token_ids=[[[1]]])


def test_prompt_messages_are_rendered_instead_of_the_prompt_string(chat_tokenizer: Tokenizer):
    model = helpers.tiny_model(seed=4, vocab_size=chat_tokenizer.vocab_size, eos_token_id=2)
    scorer = SelfCertaintyScorer(model=model, tokenizer=chat_tokenizer)
    chat = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hi."}]
    rendered = chat_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    score = scorer.score([rendered], ["Hi."], prompt_messages=[chat])[0]
    prompt_ids = chat_tokenizer.encode(rendered, add_special_tokens=False)
    completion_ids = chat_tokenizer.encode("Hi.", add_special_tokens=False)
    expected = fp64_self_certainty(model, prompt_ids, completion_ids)
    check("self_certainty", torch.tensor([score]), torch.tensor([expected]), model=model, prompts=[prompt_ids],
          completions=[completion_ids])


def test_self_certainty_by_name_in_a_composite():
    from tao_engine.scoring import build_composite

    model = helpers.tiny_model(seed=1)
    composite = build_composite([{"name": "self_certainty", "model": model, "chunk_tokens": 4},
                                 {"name": "self_certainty", "label": "mean_logprob", "method": "mean_logprob"}])
    prompt_ids, completion_ids = random_pairs(3, model.config.vocab_size, seed=5)
    logprobs = [[-0.5] * len(c) for c in completion_ids]
    report = composite.score_groups(["p"], [["a", "b", "c"]], prompt_token_ids=[prompt_ids[0]],
                                    completion_token_ids=[completion_ids], logprobs=[logprobs])
    expected = [fp64_self_certainty(model, prompt_ids[0], c) for c in completion_ids]
    check("self_certainty", torch.tensor(report.per_scorer["self_certainty"][0]), torch.tensor(expected), model=model,
          prompts=[prompt_ids[0]] * len(completion_ids), completions=completion_ids)
    assert report.per_scorer["mean_logprob"] == [[-0.5, -0.5, -0.5]]
