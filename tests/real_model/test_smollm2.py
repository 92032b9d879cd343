"""SmolLM2-135M-Instruct end to end: our import + decoder against transformers loading the same GGUF."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tao_engine.reference_generate import generate_tokens
from tests.tolerances import bound, check

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in SQL only."},
     {"role": "user", "content": "Count the rows of the table `orders` where status = 'paid'."}],
    [{"role": "user", "content": "Résume en une phrase : le chat dort sur le canapé. 🐱"}],
    [{"role": "user", "content": "def fib(n):\n    # finish this function\n"},
     {"role": "assistant", "content": "Here is one way:"},
     {"role": "user", "content": "Make it iterative, please."}],
    [{"role": "user", "content": "If I have 3 apples and eat 2, how many are left? Think step by step."}],
]


def _prompt_ids(tokenizer, chat) -> list[int]:
    return tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)


def test_chat_prompt_ids_match_transformers(smollm2_ours, smollm2_transformers):
    _, ours = smollm2_ours
    _, theirs = smollm2_transformers
    for chat in CHATS:
        expected = theirs.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(expected, dict) or hasattr(expected, "input_ids"):
            expected = expected["input_ids"]
        assert _prompt_ids(ours, chat) == list(expected)


def test_logits_match_transformers_on_chat_prompts(smollm2_ours, smollm2_transformers):
    model, tokenizer = smollm2_ours
    hf_model, _ = smollm2_transformers
    prompts = [_prompt_ids(tokenizer, chat) for chat in CHATS]
    # One padded batch of different lengths through the training-style forward (right padding).
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, : len(p)] = torch.tensor(p)
        mask[row, : len(p)] = 1
    with torch.no_grad():
        ours = model.forward_padded(ids, mask)
        theirs = torch.cat([hf_model(torch.tensor([p])).logits[0] for p in prompts])
    keep = mask.bool()
    # Two fp32 computations of SmolLM2's logits: within the whole-model bound of the real model (8 noisy fp64 runs).
    check("model_outputs", ours[keep], theirs, model=model, outputs=lambda m: m.forward_padded(ids, mask)[keep])


def test_greedy_continuation_identical(smollm2_ours, smollm2_transformers):
    model, tokenizer = smollm2_ours
    hf_model, _ = smollm2_transformers
    eos = tokenizer.eos_token_id
    lengths = []
    for chat in (CHATS[1], CHATS[3]):
        prompt = _prompt_ids(tokenizer, chat)
        ours = generate_tokens(model, prompt, max_new_tokens=32, stop_ids={eos})
        with torch.no_grad():
            out = hf_model.generate(
                torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=32, do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
            )
        assert ours == out[0, len(prompt):].tolist()
        lengths.append(len(ours))
    # The code prompt makes a long answer: the comparison covers a full 32-token continuation.
    assert max(lengths) == 32, lengths


def test_import_save_load_round_trip(smollm2_ours, smollm2_dir: Path, tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from tao_engine import load_pretrained, save_pretrained

    model, tokenizer = smollm2_ours
    out = save_pretrained(model, tmp_path / "copy", tokenizer=tokenizer)
    again, again_tok = load_pretrained(out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    prompt = _prompt_ids(tokenizer, CHATS[1])
    assert _prompt_ids(again_tok, CHATS[1]) == prompt
    assert hf_tok.encode("SELECT count(*) FROM orders;", add_special_tokens=False) == tokenizer.encode(
        "SELECT count(*) FROM orders;", add_special_tokens=False
    )
    ids = torch.tensor([prompt])
    with torch.no_grad():
        reference = model.forward_padded(ids)
        assert torch.equal(again.forward_padded(ids), reference)
        check("model_outputs", hf(ids).logits, reference, model=model, outputs=lambda m: m.forward_padded(ids))


def test_bf16_close_to_fp32(smollm2_ours, smollm2_dir: Path):
    from tao_engine import load_pretrained

    model, tokenizer = smollm2_ours
    bf16, _ = load_pretrained(smollm2_dir, dtype="bfloat16")
    ids = torch.tensor([_prompt_ids(tokenizer, CHATS[0])])
    with torch.no_grad():
        ref = torch.log_softmax(model.forward_padded(ids).double(), -1)
        low = torch.log_softmax(bf16.forward_padded(ids).double(), -1)
    # bf16 keeps 8 bits of mantissa: compare distributions, not raw logits.
    kl = (ref.exp() * (ref - low)).sum(-1)
    # The logits of a bf16-stored SmolLM2 (fp32 accumulation) against fp32: the whole-model bound, then KL from it.
    logit_bound = bound("model_outputs", model=model, outputs=lambda m: m.forward_padded(ids)[0], implementations=1,
                        storage=torch.bfloat16)
    check("bf16_model_kl", kl[0], torch.zeros_like(kl[0]), logit_bound=logit_bound)
    assert (ref.argmax(-1) == low.argmax(-1)).float().mean().item() > 0.9


def test_cli_chat_streams_an_answer(smollm2_dir: Path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tao_engine", "chat", "--model", str(smollm2_dir), "--max-new-tokens", "12",
         "--prompt", "What is the capital of France?"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    answer = out.stdout.split("model> ", 1)[1]
    assert "Paris" in answer
    assert "new tokens" in out.stderr
