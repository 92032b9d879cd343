"""Read an OpenAI request body (`/v1/chat/completions`, `/v1/completions`) into a `GenerationRequest`.

The body is first checked against the pydantic model of its endpoint, generated from the OpenAI parameter set
(tao_engine.serve.request_models): an unknown parameter, a wrong type, or a parameter OpenAI knows but this engine
cannot honour (tools, logit_bias, top alternatives in logprobs, echo...) is refused by name, never silently ignored;
the few that change nothing (`user`, `metadata`, `store`, `service_tier`) are accepted. Then what the models cannot
say is checked here (messages, prompts, stop strings, max tokens against the context), and the sampling values by
SamplingParams itself, each error a 400 naming the request parameter. Extensions beside OpenAI's names: top_k,
min_p, repetition_penalty, min_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tao_engine.engine import SamplingParams
from tao_engine.serve.config import ServeConfig
from tao_engine.serve.errors import APIError, bad_request, from_sampling_error
from tao_engine.serve.request_models import CHAT, COMPLETION, SAMPLING, validated_fields

MAX_STOP_STRINGS = 16
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_MESSAGE_KEYS = ("role", "content", "name")


@dataclass(frozen=True)
class GenerationRequest:
    kind: str  # "chat" | "completion"
    prompt: Any  # chat: [{"role", "content"[, "name"]}]; completion: text or token ids
    model: str | None
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the token counts
    logprobs: bool  # return each chosen token's log-prob
    user: str | None
    max_tokens: int | None  # as asked; None: the server's default
    max_tokens_param: str  # the name the client used, for error messages
    sampling: dict[str, Any]  # SamplingParams fields except max_tokens


def parse_chat(body: Any, config: ServeConfig) -> GenerationRequest:
    body = validated_fields(body, CHAT)
    messages = _messages(body.get("messages"))
    top = body.get("top_logprobs")
    logprobs = _typed(body, "logprobs", bool, False)
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
            raise bad_request(f"top_logprobs must be an int in [0, 20], got {top!r}", "top_logprobs")
        if not logprobs:
            raise bad_request("top_logprobs needs logprobs=true", "top_logprobs")
        if top > 0:
            raise bad_request(
                "top_logprobs > 0 is not supported: this server returns only the chosen token's log-prob; "
                "use logprobs=true with top_logprobs=0 (or leave it out)", "top_logprobs", "unsupported_value",
            )
    a, b = body.get("max_tokens"), body.get("max_completion_tokens")
    if a is not None and b is not None and a != b:
        raise bad_request("give max_completion_tokens or max_tokens, not both with different values",
                          "max_completion_tokens")
    param = "max_completion_tokens" if b is not None else "max_tokens"
    return _request("chat", messages, body, config, logprobs, b if b is not None else a, param)


def parse_completion(body: Any, config: ServeConfig) -> GenerationRequest:
    body = validated_fields(body, COMPLETION)
    logprobs = body.get("logprobs")
    if logprobs is not None:
        if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= 5:
            raise bad_request(f"logprobs must be an int in [0, 5], got {logprobs!r}", "logprobs")
        if logprobs > 0:
            raise bad_request(
                "logprobs > 0 is not supported: this server returns only the chosen token's log-prob; use logprobs=0",
                "logprobs", "unsupported_value",
            )
    prompt = _completion_prompt(body.get("prompt"))
    return _request("completion", prompt, body, config, logprobs is not None, body.get("max_tokens"), "max_tokens")


def build_sampling(request: GenerationRequest, max_tokens: int) -> SamplingParams:
    """SamplingParams for the request; its validation errors become 400s naming the request parameter."""
    try:
        return SamplingParams(max_tokens=max_tokens, **request.sampling)
    except (TypeError, ValueError) as exc:
        raise from_sampling_error(exc, {"max_tokens": request.max_tokens_param}) from None


def resolve_max_tokens(request: GenerationRequest, prompt_len: int, max_model_len: int, config: ServeConfig) -> int:
    """max_tokens to run: the asked value checked against the cap and the context, or the server's default."""
    room = max_model_len - prompt_len
    param = request.max_tokens_param
    if room < 1:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens, and the prompt has {prompt_len}: "
            "no room is left for the completion; shorten the prompt",
            "messages" if request.kind == "chat" else "prompt", "context_length_exceeded",
        )
    asked = request.max_tokens
    if asked is None:
        default = config.max_tokens_cap if request.kind == "chat" else config.completion_default_max_tokens
        return min(default, room)
    if isinstance(asked, bool) or not isinstance(asked, int):
        raise bad_request(f"{param} must be an integer, got {asked!r}", param, "invalid_type")
    if asked < 1:
        raise bad_request(f"{param} must be >= 1, got {asked}", param, "invalid_value")
    if asked > config.max_tokens_cap:
        raise bad_request(f"{param}={asked} is above this server's limit of {config.max_tokens_cap}", param,
                          "invalid_value")
    if asked > room:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_len + asked} tokens ({prompt_len} in the prompt, {asked} for the completion). Please reduce "
            f"the prompt or {param}.", param, "context_length_exceeded",
        )
    return asked


# ---- pieces ---------------------------------------------------------------------------------------------------------


def _typed(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name, default)
    if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
        raise bad_request(f"{name} must be a {kind.__name__}, got {value!r}", name, "invalid_type")
    return value


def _request(kind: str, prompt: Any, body: dict[str, Any], config: ServeConfig, logprobs: bool, max_tokens: Any,
             max_tokens_param: str) -> GenerationRequest:
    stream = body.get("stream", False)  # types checked by the request model
    options = body.get("stream_options")
    if options is not None and not stream:
        raise bad_request("stream_options is only allowed when stream is true", "stream_options")
    include_usage = options is not None and options.include_usage
    model, user = body.get("model"), body.get("user")
    sampling = {name: body[name] for name in SAMPLING if name in body}
    n = sampling.get("n", 1)
    if not isinstance(n, bool) and isinstance(n, int) and n > config.max_n:
        raise bad_request(f"n={n} is above this server's limit of {config.max_n}", "n", "invalid_value")
    if "stop" in body:
        sampling["stop"] = _stop(body["stop"])
    return GenerationRequest(kind, prompt, model, stream, include_usage, logprobs, user, max_tokens,
                             max_tokens_param, sampling)


def _stop(stop: Any) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise bad_request(f"stop must be a non-empty string or a list of them, got {stop!r}", "stop", "invalid_type")
    if len(items) > MAX_STOP_STRINGS:
        raise bad_request(f"stop holds {len(items)} strings; at most {MAX_STOP_STRINGS}", "stop", "invalid_value")
    return tuple(items)


def _messages(messages: Any) -> list[dict[str, str]]:
    if messages is None:
        raise bad_request("messages is required: a list of {'role', 'content'} objects", "messages", "missing")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {'role', 'content'} objects", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", where)
        message = {k: v for k, v in message.items() if v is not None}
        for key in message:
            if key not in _MESSAGE_KEYS:
                raise bad_request(f"{where}: unsupported field {key!r} (tool calls are not supported)",
                                  f"{where}.{key}", "unsupported_parameter")
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}", f"{where}.role")
        item = {"role": _ROLES[role], "content": _content(message.get("content"), f"{where}.content")}
        if "name" in message:
            if not isinstance(message["name"], str):
                raise bad_request(f"{where}.name must be a string", f"{where}.name", "invalid_type")
            item["name"] = message["name"]
        out.append(item)
    return out


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}[{j}]: only text parts ({{'type': 'text', 'text': ...}}) are supported",
                                  f"{where}[{j}]", "unsupported_value")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where} must be a string or a list of text parts, got {type(content).__name__}", where)


def _completion_prompt(prompt: Any) -> str | list[int]:
    if prompt is None:
        raise bad_request("prompt is required: a string or a list of token ids", "prompt", "missing")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise bad_request("batched prompts are not supported: send one request per prompt", "prompt",
                          "unsupported_value")
    raise bad_request("prompt must be a string or a non-empty list of token ids", "prompt", "invalid_type")


def check_model(request: GenerationRequest, served_name: str) -> None:
    if request.model is not None and request.model != served_name:
        raise APIError(404, f"The model `{request.model}` does not exist; this server serves `{served_name}`",
                       "invalid_request_error", "model", "model_not_found")
