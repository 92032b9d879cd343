"""The OpenAI request bodies as pydantic models, generated from one table of the parameter set (`PARAMETERS`).

Each parameter is listed once: the endpoints that take it, what pydantic checks of it, and its role:
- "request": read by tao_engine.serve.openai_params (messages, prompt, stop, max tokens, streaming, logprobs...);
- "sampling": handed to SamplingParams, whose validation is the one rule for a sampling value (so pydantic takes any
  JSON value there, and a bad one is a 400 naming the parameter, from SamplingParams' own check);
- "ignored": accepted, changes nothing (OpenAI bookkeeping: metadata, store, ...);
- "unsupported": OpenAI knows it, this engine cannot honour it: only the values in `accepted` (the no-op ones)
  pass, anything else is refused by name rather than silently ignored.

`ChatCompletionRequest` and `CompletionRequest` forbid unknown keys, so a typo is refused with the name the client
sent. The JSON body itself is decoded first by tao_engine.serve.json_body (NaN, depth, lone surrogates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError, create_model

from tao_engine.serve.errors import bad_request

CHAT, COMPLETION = "chat", "completion"
BOTH = frozenset({CHAT, COMPLETION})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False  # a last chunk with the token counts


@dataclass(frozen=True)
class Param:
    endpoints: frozenset[str]
    role: str  # "request", "sampling", "ignored" or "unsupported"
    annotation: Any = Any  # what pydantic checks; Any: the role's own reader checks it
    accepted: tuple[Any, ...] = ()  # "unsupported": the values this server takes (they change nothing)


def _sampling() -> Param:
    return Param(BOTH, "sampling")


def _unsupported(endpoints: frozenset[str], *accepted: Any) -> Param:
    return Param(endpoints, "unsupported", accepted=accepted)


_CHAT = frozenset({CHAT})
_COMPLETION = frozenset({COMPLETION})

PARAMETERS: dict[str, Param] = {
    "messages": Param(_CHAT, "request"),
    "prompt": Param(_COMPLETION, "request"),
    "model": Param(BOTH, "request", StrictStr),
    "stream": Param(BOTH, "request", StrictBool),
    "stream_options": Param(BOTH, "request", StreamOptions),
    "user": Param(BOTH, "request", StrictStr),
    "stop": Param(BOTH, "request"),
    "max_tokens": Param(BOTH, "request"),
    "max_completion_tokens": Param(_CHAT, "request"),
    "logprobs": Param(BOTH, "request"),  # chat: a bool; completions: how many alternatives (0 only here)
    "top_logprobs": Param(_CHAT, "request"),
    **{name: _sampling() for name in ("n", "temperature", "top_p", "seed", "presence_penalty", "frequency_penalty",
                                      "top_k", "min_p", "repetition_penalty", "min_tokens")},
    **{name: Param(_CHAT, "ignored") for name in ("metadata", "store", "service_tier", "parallel_tool_calls")},
    "logit_bias": _unsupported(BOTH, {}),
    "tools": _unsupported(_CHAT, []),
    "functions": _unsupported(_CHAT, []),
    "tool_choice": _unsupported(_CHAT, "none"),
    "function_call": _unsupported(_CHAT, "none"),
    "response_format": _unsupported(_CHAT, {"type": "text"}),
    "modalities": _unsupported(_CHAT, ["text"]),
    "audio": _unsupported(_CHAT),
    "prediction": _unsupported(_CHAT),
    "reasoning_effort": _unsupported(_CHAT),
    "web_search_options": _unsupported(_CHAT),
    "echo": _unsupported(_COMPLETION, False),
    "suffix": _unsupported(_COMPLETION, ""),
    "best_of": _unsupported(_COMPLETION, 1),
}
SAMPLING = tuple(name for name, p in PARAMETERS.items() if p.role == "sampling")


def _request_model(name: str, endpoint: str) -> type[BaseModel]:
    fields: dict[str, Any] = {p: (spec.annotation | None, None) for p, spec in PARAMETERS.items()
                              if endpoint in spec.endpoints}
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


ChatCompletionRequest = _request_model("ChatCompletionRequest", CHAT)
CompletionRequest = _request_model("CompletionRequest", COMPLETION)
MODELS = {CHAT: ChatCompletionRequest, COMPLETION: CompletionRequest}


def validated_fields(body: Any, endpoint: str) -> dict[str, Any]:
    """The body's parameters, checked by the endpoint's model; those sent as null are left out (OpenAI clients send
    null for "not given"). An unknown parameter, a wrong type or an unsupported value is a 400 naming it."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        request = MODELS[endpoint].model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(part) for part in error["loc"])
        param = str(error["loc"][0]) if error["loc"] else None
        if error["type"] == "extra_forbidden":
            raise bad_request(f"Unrecognized request argument supplied: {path}", path, "unknown_parameter") from None
        raise bad_request(f"{path}: {error['msg']}, got {error.get('input')!r}", param, "invalid_type") from None
    fields = {name: getattr(request, name) for name in request.model_fields_set if getattr(request, name) is not None}
    for name, value in fields.items():
        spec = PARAMETERS[name]
        if spec.role == "unsupported" and value not in spec.accepted:
            allowed = " or ".join(repr(a) for a in spec.accepted) if spec.accepted else "null"
            raise bad_request(f"{name} is not supported by this server (accepted: {allowed})", name,
                              "unsupported_parameter")
    return fields
