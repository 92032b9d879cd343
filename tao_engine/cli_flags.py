"""Command-line flags derived from a configuration dataclass, the one pattern of every subcommand (`tune` offers all
of TAOConfig as `--section.field`; `generate`, `chat`, `serve` and `flywheel` offer fields of their dataclasses):

    SAMPLING = DataclassFlags(SamplingParams(max_tokens=128), ("n", "temperature", "max_tokens"))
    SAMPLING.add_to(parser)             # --n, --temperature, --max-tokens: type, default and help from the dataclass
    params = SAMPLING.build(args)       # the dataclass back; a value it refuses is an error naming the flag

A flag's default is the value in the instance given (the dataclass's own default unless the command chose another,
where it builds that instance), its help is the field's comment (tao_engine.config_docs), its type the field's.
Flags that are no field (input and output paths, --quiet) stay plain argparse beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tao_engine.config_docs import field_docs, format_default


@dataclass(frozen=True)
class DataclassFlags:
    # an instance of the dataclass, whose values are the flags' defaults, or the dataclass itself (its own defaults;
    # a field without one is a required flag)
    base: Any
    fields: tuple[str, ...]  # the fields offered as flags, in the order --help lists them
    # the flag of a field whose name is not --field-name (a name users already have, e.g. --max-new-tokens)
    names: Mapping[str, str] = field(default_factory=dict)

    @property
    def cls(self) -> type:
        return self.base if isinstance(self.base, type) else type(self.base)

    def __post_init__(self) -> None:
        unknown = sorted((set(self.fields) | set(self.names)) - {f.name for f in dataclasses.fields(self.cls)})
        if unknown:
            raise ValueError(f"{self.cls.__name__} has no field {unknown}")

    def flag(self, name: str) -> str:
        return self.names.get(name, "--" + name.replace("_", "-"))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        hints = typing.get_type_hints(self.cls)
        docs = {doc.name: doc for doc in field_docs(self.cls, None if self.base is self.cls else self.base)}
        for name in self.fields:
            doc = docs[name]
            help_text = doc.meaning or name
            if doc.default is not None:  # None: the field's comment says what unset means
                help_text += f" (default: {format_default(doc.default)})"
            kind = _argparse_kind(hints[name], doc.default)
            if doc.default is dataclasses.MISSING:
                kind.update(required=True, default=None)
            parser.add_argument(self.flag(name), dest=name, help=help_text.replace("%", "%%"), **kind)

    def build(self, args: argparse.Namespace, **given: Any) -> Any:
        """The dataclass with the flags' values (and `given`: values the command worked out, e.g. from the
        environment); its refusal (ValueError, TypeError) becomes a ValueError that starts with the flags it names."""
        # None: a flag not given whose default is None, or a repeatable flag never given: the default stays
        values = {name: getattr(args, name) for name in self.fields if getattr(args, name) is not None}
        values = {name: tuple(v) if isinstance(v, list) else v for name, v in {**values, **given}.items()}
        try:
            return self.cls(**values) if self.base is self.cls else dataclasses.replace(self.base, **values)
        except (ValueError, TypeError) as exc:
            cls = self.cls.__name__
            named = [self.flag(n) for n in self.fields if re.search(rf"\b{cls}\.{n}\b|\b{n}=", str(exc))]
            raise ValueError(f"{' '.join(named)}: {exc}" if named else str(exc)) from None


def _argparse_kind(hint: Any, default: Any) -> dict[str, Any]:
    """add_argument's type/action for a field's type: int, float, str, bool, a tuple of them, each maybe None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]  # X | None: None is the default's business, a flag always gives an X
    if hint is bool:
        # a switch off by default is turned on by its flag; one on by default gets --no-... too
        return {"action": "store_true"} if default is False else {"action": argparse.BooleanOptionalAction,
                                                                   "default": default}
    if typing.get_origin(hint) is tuple:  # a repeatable flag: each use adds one
        return {"action": "append", "type": typing.get_args(hint)[0], "default": None}  # build() keeps the default
    if hint not in (int, float, str):
        raise TypeError(f"no command-line form for a field of type {hint!r}")
    return {"type": hint, "default": default}
