"""Chat templates: Jinja programs that turn a list of messages into a prompt string.

Rendering follows transformers' rules exactly so that prompts are byte-identical to `apply_chat_template`: a sandboxed
immutable Jinja environment with `trim_blocks`, `lstrip_blocks` and loop controls; a `tojson` filter that does not
escape HTML or non-ASCII; the `raise_exception` and `strftime_now` globals; the tokenizer's special tokens
(`bos_token`, `eos_token`, ...) as variables; messages whose None-valued keys are dropped and whose reasoning is also
exposed as `reasoning_content` and `thinking`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
NO_TEMPLATE_HELP = (
    "Pass a Jinja template string as chat_template=..., or give the model one: a 'chat_template' entry in "
    "tokenizer_config.json or a chat_template.jinja file next to it."
)


class ChatTemplateError(ValueError):
    """A chat template is missing, does not compile, raised an error while rendering, or got malformed messages."""


class _GenerationTag(jinja2.ext.Extension):
    # `{% generation %}...{% endgeneration %}` marks assistant text for training masks in Hugging Face templates;
    # its body renders unchanged, so templates that use it must parse here too.
    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    # `dict(...)` for templates without exposing the `dict` type itself to the sandbox
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # Jinja's namespace, refusing underscore names so templates cannot reach Python internals through it
    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's signature trick keeps `self=` usable
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template rejected the conversation: {message}")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; chat prompts need the plain JSON text
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template. Compile once, render many conversations."""

    def __init__(self, source: str) -> None:
        if not isinstance(source, str) or not source:
            raise ChatTemplateError(f"a chat template must be a non-empty string, got {source!r}. {NO_TEMPLATE_HELP}")
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.globals["dict"] = _TemplateDict()
        env.globals["namespace"] = _TemplateNamespace
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc.message} (line {exc.lineno})") from exc
        self.source = source

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        continue_final_message: bool | str = False,
        **variables: Any,
    ) -> str:
        """Render one conversation. `variables` (special tokens, template switches) become template variables.

        `continue_final_message` leaves the last message open (no end-of-turn tokens) so the model continues it;
        a string names the field to continue, e.g. "reasoning_content".
        """
        messages = normalize_messages(messages)
        if continue_final_message and add_generation_prompt:
            raise ChatTemplateError("continue_final_message and add_generation_prompt cannot both be set")
        final_text = _tag_final_message(messages, continue_final_message, self.source) if continue_final_message else ""
        context = {
            "messages": messages,
            "tools": _dict_list(tools, "tools", "a JSON schema dict per tool"),
            "documents": _dict_list(documents, "documents", "a dict per document, e.g. with 'title' and 'text'"),
            "add_generation_prompt": add_generation_prompt,
            **{name: _plain(value, name) for name, value in variables.items()},
        }
        try:
            rendered = self._template.render(**context)
        except (jinja2.TemplateError, TypeError) as exc:
            raise ChatTemplateError(f"the chat template failed to render: {type(exc).__name__}: {exc}") from exc
        return _cut_at_tag(rendered, final_text) if continue_final_message else rendered


# Appended to the message being continued, then located in the rendered prompt to cut everything after it
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def _tag_final_message(messages: list[dict[str, Any]], field: bool | str, source: str) -> str:
    """Append the tag to the final message's `field` (in place); return that field's text before tagging."""
    field = "content" if field is True else field
    final = messages[-1].get(field)
    if final is None:
        raise ChatTemplateError(f"continue_final_message: the final message has no {field!r} to continue")
    # Reasoning is aliased under several names; tag each copy, whichever one the template reads
    fields = [f for f in _REASONING_FIELDS if messages[-1].get(f) == final] if field in _REASONING_FIELDS else [field]
    if not any(f in source for f in fields):
        raise ChatTemplateError(f"continue_final_message: the chat template never reads the field {field!r}")
    if isinstance(final, (list, tuple)):
        blocks = [block for block in final if isinstance(block, dict) and "text" in block]
        if not blocks:
            raise ChatTemplateError("continue_final_message: the final message has no text block to continue")
        text = blocks[-1]["text"]
        blocks[-1]["text"] = text + _CONTINUE_TAG
        return text
    for f in fields:
        messages[-1][f] = messages[-1][f] + _CONTINUE_TAG
    return final


def _cut_at_tag(rendered: str, final_text: str) -> str:
    tag = _CONTINUE_TAG.strip()
    if final_text.strip() not in rendered or tag not in rendered:
        raise ChatTemplateError(
            "continue_final_message: the final message does not appear in the rendered prompt (the template "
            "dropped or rewrote part of it), so it cannot be left open"
        )
    at = rendered.rindex(tag)
    # The template may trim the message's trailing space; then trailing whitespace is dropped too
    return rendered[:at] if rendered[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else rendered[:at].rstrip()


def render_chat_template(template: str | ChatTemplate, messages: Sequence[Mapping[str, Any]], **options: Any) -> str:
    """Render `messages` with a chat template (source text or compiled) as transformers would, to a string;
    `options` are ChatTemplate.render's (add_generation_prompt, tools, documents, continue_final_message, variables)."""
    compiled = template if isinstance(template, ChatTemplate) else ChatTemplate(template)
    return compiled.render(messages, **options)


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check a conversation and return the plain copy templates see (None-valued keys dropped, reasoning aliased)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(
            f"messages must be a list of dicts like {{'role': 'user', 'content': 'Hi'}}, got {type(messages).__name__}"
        )
    if not messages:
        raise ChatTemplateError("messages is empty; a conversation needs at least one message")
    normalized = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"{where} must be a dict with 'role' and 'content', got {type(message).__name__}")
        # APIs like OpenAI's send `content=None` or `tool_calls=None`; templates handle a missing key, not None
        message = {key: value for key, value in message.items() if value is not None}
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"{where} needs a 'role' string such as 'user', got {role!r}")
        content = message.get("content")
        if content is None and "tool_calls" not in message:
            raise ChatTemplateError(f"{where} ({role}) has no 'content'; every message needs a 'content' string")
        if content is not None and not isinstance(content, str) and not _is_content_blocks(content):
            raise ChatTemplateError(
                f"{where}['content'] must be a string (or a list of content-block dicts with a 'type'), "
                f"got {type(content).__name__}"
            )
        message = _plain(message, where)
        reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
        if reasoning is not None:
            # transformers exposes a message's reasoning under the names different templates read
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        normalized.append(message)
    return normalized


def _is_content_blocks(content: Any) -> bool:
    return isinstance(content, (list, tuple)) and all(
        isinstance(block, Mapping) and isinstance(block.get("type"), str) for block in content
    )


def _dict_list(values: Any, name: str, expected: str) -> list[Any] | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
        raise ChatTemplateError(f"{name} must be a list ({expected}), got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, Mapping):
            raise ChatTemplateError(f"{name}[{i}] must be {expected}, got {type(value).__name__}")
    return _plain(list(values), name)


def _plain(value: Any, where: str) -> Any:
    """A copy made of JSON-like built-in types only: the sandbox must not see objects with unvetted methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic):
        return _plain(value.item(), where)
    if isinstance(value, Mapping):
        return {_plain(key, where): _plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise ChatTemplateError(
        f"{where} is a {type(value).__name__}; chat templates only take strings, numbers, booleans, None, "
        "lists and dicts. Convert it first (e.g. str(...) or .tolist())."
    )


def select_template(templates: str | Mapping[str, str] | None, chat_template: str | None, has_tools: bool) -> str:
    """Pick the template to render, with transformers' rules for named templates and explicit overrides."""
    if isinstance(templates, Mapping):
        if chat_template is not None:
            return templates.get(chat_template, chat_template)
        if has_tools and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ChatTemplateError(
            f"this tokenizer has several chat templates {sorted(templates)} and none is named 'default'; "
            "pass chat_template=<name> to choose one"
        )
    if chat_template is not None:
        return chat_template
    if templates is None:
        raise ChatTemplateError(f"this tokenizer has no chat template. {NO_TEMPLATE_HELP}")
    return templates


def load_chat_templates(directory: Path, config: Mapping[str, Any]) -> str | dict[str, str] | None:
    """The chat template(s) of a tokenizer directory, as transformers 5 finds them.

    `chat_template.jinja` (the default) and `additional_chat_templates/<name>.jinja` win over the `chat_template`
    entry of `tokenizer_config.json`, which may be a string or a list of {"name", "template"} objects.
    """
    files: dict[str, str] = {}
    default_file = directory / "chat_template.jinja"
    if default_file.is_file():
        files["default"] = default_file.read_text(encoding="utf-8")
    named_dir = directory / "additional_chat_templates"
    if named_dir.is_dir():
        for path in sorted(named_dir.glob("*.jinja")):
            files[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if files:
        return files["default"] if list(files) == ["default"] else files
    return templates_from_config(config)


def templates_from_config(config: Mapping[str, Any]) -> str | dict[str, str] | None:
    """`tokenizer_config.json['chat_template']`: a string, or a list of {"name", "template"} objects."""
    raw = config.get("chat_template")
    if raw is None or isinstance(raw, str):
        return raw
    if isinstance(raw, list) and all(isinstance(t, Mapping) and {"name", "template"} <= set(t) for t in raw):
        return {str(t["name"]): str(t["template"]) for t in raw}
    raise ChatTemplateError(
        "tokenizer_config.json['chat_template'] must be a string or a list of {\"name\": ..., \"template\": ...} "
        f"objects, got {type(raw).__name__}"
    )
