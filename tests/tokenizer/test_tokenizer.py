"""Tokenizer: encode, decode, special tokens, streaming and saving, checked against transformers' AutoTokenizer."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from tao_engine.tokenizer import IncrementalDecoder, Tokenizer
from tests.tokenizer.tokenizer_builders import (
    CHATML_SPECIALS,
    SAMPLES,
    template,
    train_byte_level_bpe,
    write_tokenizer_dir,
)

ALL_DIRS = ["chatml_dir", "qwen_dir", "llama_dir", "wordpiece_dir", "metaspace_dir"]


@pytest.mark.parametrize("dir_fixture", ALL_DIRS)
def test_encode_decode_match_transformers(dir_fixture, request, hf_load):
    directory = request.getfixturevalue(dir_fixture)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    for text in SAMPLES:
        for add in (True, False):
            assert ours.encode(text, add_special_tokens=add) == theirs.encode(text, add_special_tokens=add), text
        ids = theirs.encode(text)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    assert ours.encode_batch(SAMPLES) == theirs(SAMPLES)["input_ids"]
    batch = [theirs.encode(t) for t in SAMPLES]
    assert ours.decode_batch(batch, skip_special_tokens=True) == theirs.batch_decode(batch, skip_special_tokens=True)


@pytest.mark.parametrize("dir_fixture", ALL_DIRS)
def test_special_tokens_and_vocab_match_transformers(dir_fixture, request, hf_load):
    directory = request.getfixturevalue(dir_fixture)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    assert ours.vocab_size == len(ours) == len(theirs)
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, name) == getattr(theirs, name), name
        assert getattr(ours, f"{name}_id") == getattr(theirs, f"{name}_id"), name
    assert ours.special_tokens.strings() == theirs.special_tokens_map
    assert ours.chat_template == theirs.chat_template


def test_bos_comes_from_the_post_processor(llama_dir, chatml_dir):
    llama = Tokenizer.from_dir(llama_dir)
    assert llama.encode("hi")[0] == llama.bos_token_id
    assert llama.bos_token_id not in llama.encode("hi", add_special_tokens=False)
    # add_bos_token in tokenizer_config.json does not override tokenizer.json (transformers 5 ignores it too)
    chatml = Tokenizer.from_dir(chatml_dir)
    assert chatml.bos_token_id not in chatml.encode("hi")


def test_added_tokens_decoder_registers_missing_tokens(qwen_dir):
    ours = Tokenizer.from_dir(qwen_dir)
    call_id = ours.token_to_id("<tool_call>")
    assert call_id is not None and ours.token_to_id("</tool_call>") == call_id + 1
    assert ours.encode("<tool_call>x</tool_call>")[0] == call_id
    # Flagged non-special: kept by skip_special_tokens, unlike <|im_end|>
    assert ours.decode(ours.encode("<tool_call><|im_end|>"), skip_special_tokens=True) == "<tool_call>"
    assert call_id not in ours.special_token_ids and ours.eos_token_id in ours.special_token_ids


def test_eos_token_ids_include_generation_config(chatml_dir, llama_dir, qwen_dir):
    assert Tokenizer.from_dir(chatml_dir).eos_token_ids == {0, 2}
    llama = Tokenizer.from_dir(llama_dir)
    assert llama.eos_token_ids == {1, 4} and llama.eos_token_id == 4
    assert Tokenizer.from_dir(qwen_dir).eos_token_ids == {2}


def test_legacy_special_tokens_map(tmp_path, chatml_backend, hf_load):
    # Without added_tokens_decoder, transformers reads special_tokens_map.json and lets it override the config
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}
    special_map = {"eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False}, "pad_token": "<|endoftext|>", "bos_token": "<|im_start|>"}
    directory = write_tokenizer_dir(tmp_path / "legacy", chatml_backend, config, special_tokens_map=special_map)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    assert (ours.eos_token, ours.pad_token, ours.bos_token) == ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
    assert ours.special_tokens.strings() == theirs.special_tokens_map


def test_missing_special_token_is_added(tmp_path, chatml_backend, hf_load):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<pad>"}
    directory = write_tokenizer_dir(tmp_path / "pad", chatml_backend, config)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    assert ours.pad_token_id == theirs.pad_token_id == chatml_backend.get_vocab_size(with_added_tokens=True)
    assert len(ours) == len(theirs)
    assert ours.encode("a<pad>b") == theirs.encode("a<pad>b")


@pytest.mark.parametrize(
    "extra",
    [
        {"additional_special_tokens": ["<extra_1>", "<|im_start|>"], "image_token": "<image>"},
        {"extra_special_tokens": {"audio_token": "<audio>"}},
    ],
)
def test_extra_and_model_specific_special_tokens(extra, tmp_path, chatml_backend, hf_load):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", **extra}
    directory = write_tokenizer_dir(tmp_path / "extra", chatml_backend, config)
    text = "a<image><extra_1><audio>b<|im_start|>"
    for _ in range(2):  # as loaded, then after a save_pretrained round trip
        ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
        assert len(ours) == len(theirs) > chatml_backend.get_vocab_size(with_added_tokens=True)
        assert ours.special_tokens.strings() == theirs.special_tokens_map  # image_token / audio_token included
        assert ours.encode(text) == theirs.encode(text)
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == theirs.decode(
            theirs.encode(text), skip_special_tokens=True
        )
        directory = ours.save_pretrained(tmp_path / "saved")


def test_clean_up_spaces_only_for_non_bpe(wordpiece_dir, chatml_dir):
    wordpiece = Tokenizer.from_dir(wordpiece_dir)
    ids = wordpiece.encode("isn't it great !")
    assert "n't" in wordpiece.decode(ids) and " !" not in wordpiece.decode(ids)
    assert " !" in wordpiece.decode(ids, clean_up_tokenization_spaces=False)
    chatml = Tokenizer.from_dir(chatml_dir)
    assert chatml.decode(chatml.encode("Hello world .")) == "Hello world ."


def test_missing_tokenizer_json_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="tokenizer.json.*save_pretrained"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Tokenizer.from_dir(tmp_path / "nope")


def test_bad_config_values_are_clear_errors(tmp_path, chatml_backend):
    bad = write_tokenizer_dir(tmp_path / "bad", chatml_backend, {"eos_token": 7})
    with pytest.raises(ValueError, match=r"tokenizer_config.json\['eos_token'\]"):
        Tokenizer.from_dir(bad)
    (bad / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.from_dir(bad)
    gen = write_tokenizer_dir(tmp_path / "gen", chatml_backend, {}, generation_config={"eos_token_id": "2"})
    with pytest.raises(ValueError, match="generation_config.json.*eos_token_id"):
        Tokenizer.from_dir(gen)
    ours = Tokenizer.from_dir(write_tokenizer_dir(tmp_path / "ok", chatml_backend, {}))
    with pytest.raises(TypeError, match="encode takes a str"):
        ours.encode(["a list"])
    with pytest.raises(TypeError, match="token ids"):
        ours.decode(["a", "b"])


STREAM_TEXTS = [
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧 and 🇫🇷 flags",
    "你好，世界！日本語のテキストと中文混合",
    "mixed 中文 and English 和 😀 together, isn't it ? Yes !",
    "def f(x):\n    return x ** 2  # ∑ √\n",
    "<|im_start|>assistant\nSure 😀<|im_end|>",
]


@pytest.mark.parametrize("dir_fixture", ["chatml_dir", "metaspace_dir", "wordpiece_dir", "llama_dir"])
@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_incremental_decoder_concatenates_to_full_decode(dir_fixture, skip_special_tokens, request):
    tokenizer = Tokenizer.from_dir(request.getfixturevalue(dir_fixture))
    rng = random.Random(0)
    held_back = False
    for text in STREAM_TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        full = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        for chunking in ("one", "random"):
            decoder = tokenizer.incremental_decoder(skip_special_tokens=skip_special_tokens)
            pieces, i = [], 0
            while i < len(ids):
                step = 1 if chunking == "one" else rng.randint(1, 4)
                piece = decoder.push(ids[i : i + step])
                i += step
                # Never a partial character: nothing streamed carries U+FFFD when the full text has none
                assert "\ufffd" not in piece or "\ufffd" in full
                held_back |= piece == "" and "\ufffd" in tokenizer.decode(ids[:i])
                pieces.append(piece)
                assert full.startswith("".join(pieces)), (text, pieces)
            pieces.append(decoder.finish())
            assert "".join(pieces) == full, text
            assert decoder.token_ids == ids
    if dir_fixture != "wordpiece_dir":
        assert held_back, "byte-level tokens should split some characters"


def test_incremental_decoder_usage_errors(chatml_dir):
    tokenizer = Tokenizer.from_dir(chatml_dir)
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.push([]) == ""
    assert decoder.push(tokenizer.encode("ok")) == "ok"
    assert decoder.finish() == "" and decoder.finish() == ""
    with pytest.raises(RuntimeError, match="finished"):
        decoder.push(5)
    with pytest.raises(TypeError, match="token ids"):
        tokenizer.incremental_decoder().push("text")


def test_incremental_decoder_flushes_unfinished_character(chatml_dir):
    tokenizer = Tokenizer.from_dir(chatml_dir)
    ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(ids) > 1  # byte-level pieces of one emoji
    decoder = tokenizer.incremental_decoder()
    assert decoder.push(ids[:-1]) == ""
    assert decoder.finish() == tokenizer.decode(ids[:-1])


@pytest.mark.parametrize("dir_fixture", ["chatml_dir", "qwen_dir", "llama_dir"])
def test_save_pretrained_round_trip(dir_fixture, request, tmp_path, hf_load):
    source = Tokenizer.from_dir(request.getfixturevalue(dir_fixture))
    saved = source.save_pretrained(tmp_path / "saved")
    assert {p.name for p in saved.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["chat_template"] == source.chat_template
    ours, theirs = Tokenizer.from_dir(saved), hf_load(saved)
    assert len(ours) == len(theirs) == len(source)
    assert ours.special_tokens.strings() == theirs.special_tokens_map == source.special_tokens.strings()
    assert ours.chat_template == theirs.chat_template == source.chat_template
    for text in SAMPLES:
        assert ours.encode(text) == theirs.encode(text) == source.encode(text), text
        ids = source.encode(text)
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    chat = [{"role": "user", "content": "Hi 😀"}, {"role": "assistant", "content": "Hello!"}]
    kwargs = {"date_string": "26 Jul 2024"}
    expected = source.apply_chat_template(chat, add_generation_prompt=True, tokenize=False, **kwargs)
    assert ours.apply_chat_template(chat, add_generation_prompt=True, tokenize=False, **kwargs) == expected
    assert theirs.apply_chat_template(chat, add_generation_prompt=True, tokenize=False, **kwargs) == expected


def test_save_pretrained_named_templates_and_jinja_file(tmp_path, hf_load):
    backend = train_byte_level_bpe(CHATML_SPECIALS)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "chat_template": "unused"}
    # transformers 5 layout: chat_template.jinja and additional_chat_templates/<name>.jinja win over the config entry
    files = {
        "chat_template.jinja": template("smollm2.jinja"),
        "additional_chat_templates/tool_use.jinja": template("qwen2_5.jinja"),
    }
    source_dir = write_tokenizer_dir(tmp_path / "src", backend, config, files=files)
    source = Tokenizer.from_dir(source_dir)
    assert source.chat_template == hf_load(source_dir).chat_template
    expected = {"default": files["chat_template.jinja"], "tool_use": files["additional_chat_templates/tool_use.jinja"]}
    assert source.chat_template == expected
    # Saving into the source directory replaces the template files with the config entry
    shutil.copytree(source_dir, tmp_path / "dst")
    source.save_pretrained(tmp_path / "dst")
    assert not (tmp_path / "dst" / "chat_template.jinja").exists()
    reloaded = Tokenizer.from_dir(tmp_path / "dst")
    assert reloaded.chat_template == source.chat_template == hf_load(tmp_path / "dst").chat_template
