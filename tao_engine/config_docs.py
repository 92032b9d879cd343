"""What each field of a configuration dataclass (or parameter of a constructor) means, read from where the code
already says it, so that `tao-engine tune --help-config`, `init-config` and the scorer reference never restate (and
drift from) the source.

A field's meaning is its comment: the comment at the end of its line, after the comment lines right above it (the
way Sphinx documents attributes); a constructor parameter's is the comment on its line, or the same parameter's in a
base class. A dataclass whose fields are described in a TOML-style block of its class or module docstring
(`name = value   # meaning`, continued by `#   ...` lines) is read from there. Types and defaults come from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from typing import Any

_DOCSTRING_FIELD = re.compile(r"^\s*(\w+)\s*=\s*[^#\n]*#\s?(.*)$")
_DOCSTRING_MORE = re.compile(r"^\s+#\s+(.*)$")
_TOOL_COMMENTS = ("noqa", "type:", "pragma", "fmt:")
_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str  # as written in the class (annotations are strings under `from __future__ import annotations`)
    default: Any  # dataclasses.MISSING when required
    meaning: str  # "" when the source says nothing


def format_default(value: Any) -> str:
    """A default as it would be written in TOML; unset (None) and required values in words; long text cut."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "(unset)"
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{f.name} = {format_default(getattr(value, f.name))}"
                               for f in dataclasses.fields(value)) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_default(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_default(v)}" for k, v in value.items()) + "}"
    return repr(value)


def field_docs(cls: type, instance: Any = None) -> list[FieldDoc]:
    """One FieldDoc per field of the dataclass `cls`, in order; defaults are `instance`'s values when given (a
    section whose defaults a parent config overrides)."""
    meanings = {**_docstring_meanings(cls), **_comment_meanings(cls)}
    out = []
    for f in dataclasses.fields(cls):
        if instance is not None:
            default = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append(FieldDoc(f.name, kind, default, meanings.get(f.name, "")))
    return out


def param_docs(cls: type) -> list[FieldDoc]:
    """One FieldDoc per keyword a class's constructor takes (a dataclass: its init fields), in order."""
    if dataclasses.is_dataclass(cls):
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        return [doc for doc in field_docs(cls) if doc.name in init]
    meanings: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins over its base's
        if "__init__" in vars(klass):
            meanings.update(_param_comments(vars(klass)["__init__"]))
    out = []
    for p in list(inspect.signature(cls).parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        default = dataclasses.MISSING if p.default is p.empty else p.default
        out.append(FieldDoc(p.name, kind if p.annotation is not p.empty else "", default, meanings.get(p.name, "")))
    return out


def _param_comments(function: Any) -> dict[str, str]:
    parsed = _parsed(function)
    if parsed is None:
        return {}
    node, comments, _ = parsed
    args = node.args
    out = {}
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        text = " ".join(comments[n] for n in range(arg.lineno, (arg.end_lineno or arg.lineno) + 1) if n in comments)
        if text:
            out[arg.arg] = text
    return out


def _parsed(obj: Any) -> tuple[Any, dict[int, str], set[int]] | None:
    """(the ast node of `obj`, its comments by line, the lines that hold code), or None without source."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):  # no source on disk (a frozen app): types and defaults only
        return None
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if not text.startswith(_TOOL_COMMENTS):  # linter and type-checker directives are not docs
                comments[tok.start[0]] = text
        elif tok.type not in _NOT_CODE:
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return ast.parse(source).body[0], comments, code_lines


def _comment_meanings(cls: type) -> dict[str, str]:
    parsed = _parsed(cls)
    if parsed is None:
        return {}
    node, comments, code_lines = parsed
    out: dict[str, str] = {}
    for item in getattr(node, "body", []):
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        above: list[str] = []
        line = item.lineno - 1
        while line in comments and line not in code_lines:  # the comment block right above the field
            above.insert(0, comments[line])
            line -= 1
        inline = [comments[n] for n in range(item.lineno, (item.end_lineno or item.lineno) + 1) if n in comments]
        text = " ".join(part for part in above + inline if part)
        if text:
            out[item.target.id] = text
    return out


def _docstring_meanings(cls: type) -> dict[str, str]:
    names = {f.name for f in dataclasses.fields(cls)}
    module = sys.modules.get(cls.__module__)
    out: dict[str, str] = {}
    for doc in (getattr(module, "__doc__", None), cls.__doc__):
        current = None
        for line in (doc or "").splitlines():
            match = _DOCSTRING_FIELD.match(line)
            if match and match.group(1) in names:
                current = match.group(1)
                out[current] = match.group(2).strip()
                continue
            more = _DOCSTRING_MORE.match(line)
            if more and current is not None:
                out[current] += " " + more.group(1).strip()
            else:
                current = None
    return out
