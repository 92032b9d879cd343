"""Reward models: tiny random transformers *ForSequenceClassification checkpoints score the same through our decoder,
in packed token-budget batches; the last-non-pad-token rule; clear errors for directories that are not reward models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tao_engine.models.loading import ModelLoadError
from tao_engine.scoring.reward_model import RewardModelScorer
from tao_engine.scoring.reward_model_loading import load_reward_model, pooled_position
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir
from tests.tolerances import check

transformers = pytest.importorskip("transformers")

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Write SQL counting rows of t.", "Hi"]
COMPLETIONS = ["4", "Blue, like the sky on a clear day.", "SELECT COUNT(*) FROM t;", ""]
CASES = {  # name -> (helpers.HF_CASES entry, sequence-classification architecture)
    "llama": ("llama", "LlamaForSequenceClassification"),
    "qwen2": ("qwen2", "Qwen2ForSequenceClassification"),
    "qwen3": ("qwen3", "Qwen3ForSequenceClassification"),
}


@pytest.fixture(scope="module")
def tokenizer_backend():
    return train_byte_level_bpe(CHATML_SPECIALS)


def make_reward_dir(directory: Path, case: str, backend, num_labels: int = 1, pad_token_id: int | None = 2):
    """A random transformers reward model saved with save_pretrained, plus a ChatML tokenizer; returns (dir, hf)."""
    base, arch = CASES[case]
    config = helpers.hf_config(base)
    config.architectures = [arch]
    config.vocab_size = backend.get_vocab_size(with_added_tokens=True)
    config.num_labels = num_labels
    config.pad_token_id = pad_token_id
    torch.manual_seed(0)
    hf = transformers.AutoModelForSequenceClassification.from_config(
        config, attn_implementation="eager", dtype=torch.float32
    )
    helpers.randomize_(hf, seed=3)
    hf.eval().save_pretrained(directory)
    tokenizer_config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                        "chat_template": template("smollm2.jinja")}
    write_tokenizer_dir(directory, backend, tokenizer_config)
    return directory, hf


def assert_scores(scores, expected: torch.Tensor, scorer: RewardModelScorer, sequences: list[list[int]]) -> None:
    """Head logits of two fp32 paths (ours packed, transformers' or another batching) within the whole-model bound
    of the reward model's head on each sequence alone (tests/bounds/model.py)."""
    from tao_engine.forward_batch import ForwardBatch

    def heads(m) -> torch.Tensor:
        out = []
        for seq in sequences:
            index = torch.tensor([pooled_position(seq, m.pad_token_id)])
            out.append(m(torch.tensor(seq), ForwardBatch.for_sequences([len(seq)]), index)[0, scorer.label_index])
        return torch.stack(out)

    check("model_outputs", torch.tensor(scores), expected.double(), model=scorer.model, outputs=heads)


def hf_scores(hf, sequences: list[list[int]]) -> torch.Tensor:
    """transformers' logits, one sequence at a time (no padding involved): [B, num_labels]."""
    with torch.no_grad():
        return torch.cat([hf(input_ids=torch.tensor([s])).logits for s in sequences])


@pytest.mark.parametrize("case", list(CASES))
def test_scores_equal_transformers_logits(tmp_path: Path, tokenizer_backend, case: str):
    directory, hf = make_reward_dir(tmp_path / case, case, tokenizer_backend)
    scorer = RewardModelScorer(directory)
    scores = scorer.score(PROMPTS, COMPLETIONS)
    sequences = [scorer.encode(p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert sequences[0][0] == scorer.tokenizer.token_to_id("<|im_start|>")  # chat-rendered, template's own BOS
    expected = hf_scores(hf, sequences)[:, 0]
    assert_scores(scores, expected, scorer, sequences)
    assert len(set(scores)) == len(scores)  # the head sees different texts, not a constant
    metrics = scorer.metrics()
    assert metrics["sequences"] == len(PROMPTS) and metrics["tokens"] == sum(len(s) for s in sequences)
    assert scorer.metrics()["sequences"] == 0  # counters reset on read


def test_token_budget_batches_give_the_same_scores_as_one_batch(tmp_path: Path, tokenizer_backend):
    directory, _ = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    scorer = RewardModelScorer(directory)
    one = scorer.score(PROMPTS * 2, COMPLETIONS * 2)
    small = RewardModelScorer(directory, max_batch_tokens=40).score(PROMPTS * 2, COMPLETIONS * 2)
    sequences = [scorer.encode(p, c) for p, c in zip(PROMPTS * 2, COMPLETIONS * 2, strict=True)]
    assert_scores(small, torch.tensor(one), scorer, sequences)
    assert_scores(one[:4], torch.tensor(one[4:]), scorer, sequences[:4])


@pytest.mark.parametrize("pad_token_id", [7, None])
def test_pooled_token_is_the_last_non_pad_one(tmp_path: Path, tokenizer_backend, pad_token_id):
    directory, hf = make_reward_dir(tmp_path / "m", "qwen2", tokenizer_backend, num_labels=3,
                                    pad_token_id=pad_token_id)
    scorer = RewardModelScorer(directory, label_index=2)
    # trailing pad tokens inside the text, a pad in the middle, an all-pad sequence, odd lengths
    sequences = [[5, 9, 11, 7, 7], [7, 13, 7, 20], [7, 7, 7], [31], list(range(40, 169))]
    if pad_token_id is None:
        sequences = sequences[1:2] + sequences[3:]
    ours = scorer.score_token_ids(sequences)
    expected = hf_scores(hf, sequences)[:, 2]
    assert_scores(ours, expected, scorer, sequences)
    assert pooled_position([5, 9, 11, 7, 7], 7) == 2 and pooled_position([7, 7], 7) == 0
    assert pooled_position([5, 7], None) == 1


def test_right_padded_transformers_batch_agrees(tmp_path: Path, tokenizer_backend):
    """transformers' own batched path (right padding with pad_token_id) gives the scores our packed path gives."""
    directory, hf = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    scorer = RewardModelScorer(directory)
    sequences = [scorer.encode(p, c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [2] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert_scores(scorer.score(PROMPTS, COMPLETIONS), expected, scorer, sequences)


def test_truncation_keeps_the_end_and_is_counted(tmp_path: Path, tokenizer_backend):
    directory, hf = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    scorer = RewardModelScorer(directory, max_length=12)
    long = "a fairly long completion " * 6
    score = scorer.score(["q"], [long])[0]
    ids = RewardModelScorer(directory).encode("q", long)[-12:]
    assert_scores([score], hf_scores(hf, [ids])[:, 0], scorer, [ids])
    assert scorer.metrics()["truncated"] == 1


def test_plain_text_mode_and_errors(tmp_path: Path, tokenizer_backend):
    directory, hf = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    plain = RewardModelScorer(directory, chat_template=False)
    ids = plain.tokenizer.encode("Q: 1+1? A: 2", add_special_tokens=True)
    assert_scores(plain.score(["Q: 1+1? A: "], ["2"]), hf_scores(hf, [ids])[:, 0], plain, [ids])
    with pytest.raises(ValueError, match="label_index=1"):
        RewardModelScorer(directory, label_index=1)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        RewardModelScorer(directory, max_batch_tokens=0)
    with pytest.raises(ValueError, match="tokenizer="):
        RewardModelScorer(load_reward_model(directory))


def test_directory_without_score_weight_is_an_error(tmp_path: Path, tokenizer_backend):
    directory, _ = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    weights = load_file(str(directory / "model.safetensors"))
    weights.pop("score.weight")
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="no 'score.weight'"):
        load_reward_model(directory)


def test_causal_lm_and_bias_heads_are_errors(tmp_path: Path, tokenizer_backend):
    causal = helpers.make_hf_model("llama")
    causal.save_pretrained(tmp_path / "causal")
    with pytest.raises(ModelLoadError, match="not a sequence-classification reward model"):
        load_reward_model(tmp_path / "causal")
    directory, _ = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    weights = load_file(str(directory / "model.safetensors"))
    weights["score.bias"] = torch.zeros(1)
    save_file(weights, str(directory / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="unexpected tensor 'score.bias'"):
        load_reward_model(directory)


def test_prompt_messages_context_replaces_the_prompt_string(tmp_path: Path, tokenizer_backend):
    directory, hf = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    scorer = RewardModelScorer(directory)
    chat = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"}]
    already_rendered = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    scores = scorer.score([already_rendered, "Capital of France?"], ["Paris.", "Paris."],
                          prompt_messages=[chat, None])
    full = chat + [{"role": "assistant", "content": "Paris."}]
    ids = scorer.tokenizer.encode(scorer.tokenizer.apply_chat_template(full, tokenize=False), add_special_tokens=False)
    plain = scorer.encode("Capital of France?", "Paris.")
    expected = hf_scores(hf, [ids, plain])[:, 0]
    assert_scores(scores, expected, scorer, [ids, plain])
    with pytest.raises(ValueError, match="prompt_messages"):
        scorer.score(["q"], ["a"], prompt_messages=[[{"role": "user"}]])


def test_reward_model_by_name_from_a_spec(tmp_path: Path, tokenizer_backend):
    from tao_engine.scoring import build_composite, build_scorer

    directory, hf = make_reward_dir(tmp_path / "m", "llama", tokenizer_backend)
    scorer, weight = build_scorer({"name": "reward_model", "model": str(directory), "max_batch_tokens": 64,
                                   "weight": 2.0})
    assert isinstance(scorer, RewardModelScorer) and weight == 2.0
    report = build_composite([{"name": "reward_model", "model": str(directory)}]).score_groups(
        PROMPTS[:2], [COMPLETIONS[:2], COMPLETIONS[2:]])
    direct = scorer.score([PROMPTS[0]] * 2 + [PROMPTS[1]] * 2, COMPLETIONS)
    grouped = report.per_scorer["reward_model"]
    sequences = [scorer.encode(p, c) for p, c in zip([PROMPTS[0]] * 2 + [PROMPTS[1]] * 2, COMPLETIONS, strict=True)]
    assert_scores(grouped[0] + grouped[1], torch.tensor(direct), scorer, sequences)
    assert report.metrics["reward_model/sequences"] == 4
    with pytest.raises(ValueError, match="missing required key"):
        build_scorer({"name": "reward_model"})
