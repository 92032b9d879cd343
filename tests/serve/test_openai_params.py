"""Reading OpenAI request bodies: what is mapped, what is refused (and how the error names the parameter)."""

from __future__ import annotations

import pytest

from tao_engine.serve import ServeConfig
from tao_engine.serve.errors import APIError
from tao_engine.serve.openai_params import build_sampling, parse_chat, parse_completion, resolve_max_tokens

CONFIG = ServeConfig(max_tokens_cap=100, max_n=4)
USER = [{"role": "user", "content": "hi"}]


def _error(fn, body) -> APIError:
    with pytest.raises(APIError) as info:
        fn(body, CONFIG)
    assert info.value.status == 400
    return info.value


def test_chat_maps_openai_parameters_and_extensions():
    req = parse_chat({"messages": USER, "model": "m", "temperature": 0.5, "top_p": 0.9, "n": 2, "seed": 7,
                      "max_completion_tokens": 12, "stop": "END", "presence_penalty": 0.5, "frequency_penalty": -0.5,
                      "logprobs": True, "top_logprobs": 0, "stream": True, "stream_options": {"include_usage": True},
                      "user": "alice", "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "min_tokens": 1,
                      "metadata": {"a": "b"}, "store": False, "tools": [], "tool_choice": None,
                      "response_format": {"type": "text"}, "logit_bias": {}}, CONFIG)
    assert (req.kind, req.model, req.stream, req.include_usage, req.logprobs, req.user) == (
        "chat", "m", True, True, True, "alice")
    assert (req.max_tokens, req.max_tokens_param) == (12, "max_completion_tokens")
    params = build_sampling(req, 12)
    assert (params.n, params.temperature, params.top_p, params.seed, params.stop) == (2, 0.5, 0.9, 7, ("END",))
    assert (params.presence_penalty, params.frequency_penalty, params.top_k, params.min_p) == (0.5, -0.5, 5, 0.1)
    assert (params.repetition_penalty, params.min_tokens, params.max_tokens) == (1.1, 1, 12)


def test_messages_are_normalized_and_checked():
    req = parse_chat({"messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "name": "bob"},
        {"role": "assistant", "content": "ok", "refusal": None},
    ]}, CONFIG)
    assert req.prompt == [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "a\nb", "name": "bob"},
                          {"role": "assistant", "content": "ok"}]
    assert _error(parse_chat, {"messages": []}).param == "messages"
    assert _error(parse_chat, {}).code == "missing"
    assert _error(parse_chat, {"messages": [{"role": "tool", "content": "x"}]}).param == "messages[0].role"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert "only text parts" in _error(parse_chat, {"messages": image}).message
    assert _error(parse_chat, {"messages": [{"role": "user", "content": "x", "tool_calls": []}]}).param == (
        "messages[0].tool_calls")


def test_unknown_and_unsupported_parameters_are_refused_by_name():
    err = _error(parse_chat, {"messages": USER, "temprature": 1.0})
    assert (err.param, err.code) == ("temprature", "unknown_parameter")
    assert err.message == "Unrecognized request argument supplied: temprature"
    for name, value in [("tools", [{"type": "function"}]), ("logit_bias", {"5": 10}), ("tool_choice", "auto"),
                        ("response_format", {"type": "json_object"}), ("audio", {"voice": "x"})]:
        err = _error(parse_chat, {"messages": USER, name: value})
        assert (err.param, err.code) == (name, "unsupported_parameter"), name
    for name, value in [("echo", True), ("suffix", "x"), ("best_of", 3)]:
        assert _error(parse_completion, {"prompt": "x", name: value}).param == name
    assert _error(parse_completion, {"prompt": "x", "messages": USER}).code == "unknown_parameter"


def test_logprobs_only_for_the_chosen_token():
    err = _error(parse_chat, {"messages": USER, "logprobs": True, "top_logprobs": 3})
    assert err.param == "top_logprobs" and "only the chosen token" in err.message
    assert "needs logprobs=true" in _error(parse_chat, {"messages": USER, "top_logprobs": 0}).message
    assert parse_completion({"prompt": "x", "logprobs": 0}, CONFIG).logprobs
    assert not parse_completion({"prompt": "x", "logprobs": None}, CONFIG).logprobs
    assert _error(parse_completion, {"prompt": "x", "logprobs": 2}).code == "unsupported_value"


def test_values_are_checked_with_the_parameter_named():
    assert _error(parse_chat, {"messages": USER, "n": 5}).param == "n"  # above max_n
    assert _error(parse_chat, {"messages": USER, "stream": "yes"}).param == "stream"
    assert _error(parse_chat, {"messages": USER, "stream_options": {"include_usage": True}}).param == "stream_options"
    assert _error(parse_chat, {"messages": USER, "stop": ["a", ""]}).param == "stop"
    assert _error(parse_chat, {"messages": USER, "stop": ["s"] * 17}).param == "stop"
    assert _error(parse_chat, {"messages": USER, "max_tokens": 3, "max_completion_tokens": 4}).param == (
        "max_completion_tokens")
    assert _error(parse_chat, [1, 2]).message.startswith("the request body must be a JSON object")
    for body, param in [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"n": "2"}, "n"),
                        ({"presence_penalty": 3}, "presence_penalty"), ({"seed": 1.5}, "seed")]:
        req = parse_chat({"messages": USER, **body}, CONFIG)
        with pytest.raises(APIError) as info:
            build_sampling(req, 5)
        assert (info.value.status, info.value.param) == (400, param), body
        assert "SamplingParams" not in info.value.message


def test_completion_prompts():
    assert parse_completion({"prompt": "hello"}, CONFIG).prompt == "hello"
    assert parse_completion({"prompt": ["hello"]}, CONFIG).prompt == "hello"
    assert parse_completion({"prompt": [5, 6, 7]}, CONFIG).prompt == [5, 6, 7]
    assert parse_completion({"prompt": [[5, 6]]}, CONFIG).prompt == [5, 6]
    assert "batched prompts" in _error(parse_completion, {"prompt": ["a", "b"]}).message
    assert _error(parse_completion, {"prompt": [1, True]}).param == "prompt"
    assert _error(parse_completion, {}).code == "missing"


def test_max_tokens_defaults_cap_and_context():
    chat = parse_chat({"messages": USER}, CONFIG)
    assert resolve_max_tokens(chat, prompt_len=10, max_model_len=50, config=CONFIG) == 40  # the room left
    assert resolve_max_tokens(chat, prompt_len=10, max_model_len=500, config=CONFIG) == 100  # the cap
    completion = parse_completion({"prompt": "x"}, CONFIG)
    assert resolve_max_tokens(completion, 10, 500, CONFIG) == 16  # OpenAI's legacy default
    asked = parse_chat({"messages": USER, "max_tokens": 101}, CONFIG)
    with pytest.raises(APIError, match="above this server's limit of 100"):
        resolve_max_tokens(asked, 10, 500, CONFIG)
    asked = parse_chat({"messages": USER, "max_completion_tokens": 45}, CONFIG)
    with pytest.raises(APIError) as info:
        resolve_max_tokens(asked, 10, 50, CONFIG)
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "max_completion_tokens")
    assert "55 tokens (10 in the prompt, 45 for the completion)" in info.value.message
    with pytest.raises(APIError) as info:
        resolve_max_tokens(chat, 50, 50, CONFIG)
    assert (info.value.code, info.value.param) == ("context_length_exceeded", "messages")
    with pytest.raises(APIError, match="must be >= 1"):
        resolve_max_tokens(parse_chat({"messages": USER, "max_tokens": 0}, CONFIG), 10, 50, CONFIG)
