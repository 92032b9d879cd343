"""Rule scorers: regex and tag format, length bounds, required / forbidden strings, JSON with JSON Schema.
Each gives 1.0 when the rule holds and 0.0 when it does not (partial credit where a parameter asks for it)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores
from tao_engine.scoring.extract import get_extractor

_REGEX_MODES = ("search", "match", "fullmatch")
_LENGTH_UNITS = ("chars", "words")


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(s, str) for s in value):
        raise ValueError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


def _needles(value: Any, where: str, case_sensitive: bool) -> tuple[str, ...]:
    """The strings a string scorer looks for (case-folded when it compares case-folded); at least one."""
    needles = _strings(value, f"{where}: strings")
    if not needles:
        raise ValueError(f"{where}: strings must not be empty")
    return needles if case_sensitive else tuple(s.casefold() for s in needles)


@dataclass
class RegexScorer:
    """1.0 when `pattern` matches the completion (re.search / re.match / re.fullmatch), else 0.0; `negate` flips."""

    name: ClassVar[str] = "regex"
    pattern: str  # a Python regular expression
    mode: str = "search"  # search (anywhere), match (at the start) or fullmatch (the whole completion)
    flags: Sequence[str] = ()  # re flag names: "IGNORECASE", "MULTILINE", "DOTALL", ...
    negate: bool = False  # reward the completions that do NOT match

    def __post_init__(self) -> None:
        if self.mode not in _REGEX_MODES:
            raise ValueError(f"regex: mode must be one of {_REGEX_MODES}, got {self.mode!r}")
        bits = 0
        for flag in _strings(self.flags, "regex: flags"):
            if not isinstance(getattr(re.RegexFlag, flag.upper(), None), re.RegexFlag):
                raise ValueError(f"regex: unknown flag {flag!r}; use names like IGNORECASE, MULTILINE, DOTALL")
            bits |= getattr(re.RegexFlag, flag.upper())
        try:
            self._regex = re.compile(self.pattern, bits)
        except re.error as exc:
            raise ValueError(f"regex: pattern {self.pattern!r} does not compile: {exc}") from exc

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        match = getattr(self._regex, self.mode)
        return [float((match(c) is not None) != self.negate) for c in completions]


@dataclass
class TagFormatScorer:
    """1.0 when the completion is `<think>...</think><answer>...</answer>` (the given tags, each once, in order,
    whitespace between); with `allow_outside_text`, other text may surround and separate them."""

    name: ClassVar[str] = "tag_format"
    tags: Sequence[str] = ("think", "answer")  # the tag names, in the order they must appear
    allow_outside_text: bool = False  # other text may come before, between and after the tags

    def __post_init__(self) -> None:
        tags = _strings(self.tags, "tag_format: tags")
        if not tags or not all(re.fullmatch(r"[\w-]+", t) for t in tags):
            raise ValueError(f"tag_format: tags must be non-empty names (letters, digits, _ or -), got {tags!r}")
        gap = r".*?" if self.allow_outside_text else r"\s*"
        body = "".join(rf"{gap}<{t}>(?:(?!</?{t}>).)*</{t}>" for t in tags)
        self._regex = re.compile(body + (r".*" if self.allow_outside_text else r"\s*"), re.DOTALL)
        self._tags = tags

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        def ok(c: str) -> bool:
            once = all(c.count(f"<{t}>") == 1 and c.count(f"</{t}>") == 1 for t in self._tags)
            return once and self._regex.fullmatch(c) is not None

        return [float(ok(c)) for c in completions]


@dataclass
class LengthScorer:
    """1.0 when min_length <= length <= max_length (either bound may be left out), counted in chars or words."""

    name: ClassVar[str] = "length"
    min_length: int | None = None  # shortest length that scores 1.0 (unset: no lower bound)
    max_length: int | None = None  # longest length that scores 1.0 (unset: no upper bound)
    unit: str = "chars"  # what is counted: chars or words (whitespace-separated)

    def __post_init__(self) -> None:
        if self.unit not in _LENGTH_UNITS:
            raise ValueError(f"length: unit must be one of {_LENGTH_UNITS}, got {self.unit!r}")
        for key in ("min_length", "max_length"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"length: {key} must be an int >= 0 or left out, got {v!r}")
        if self.min_length is None and self.max_length is None:
            raise ValueError("length: give min_length, max_length or both")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"length: min_length {self.min_length} > max_length {self.max_length}")

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        lo = self.min_length if self.min_length is not None else 0
        hi = self.max_length if self.max_length is not None else float("inf")
        lengths = [len(c) if self.unit == "chars" else len(c.split()) for c in completions]
        return [float(lo <= n <= hi) for n in lengths]


@dataclass
class RequiredStringsScorer:
    """1.0 when every string occurs in the completion; with `partial_credit`, the fraction that occur."""

    name: ClassVar[str] = "required_strings"
    strings: Sequence[str]  # the strings that must occur
    case_sensitive: bool = True  # false: compare case-folded
    partial_credit: bool = False  # the fraction of the strings that occur, instead of all or nothing

    def __post_init__(self) -> None:
        self._needles = _needles(self.strings, "required_strings", self.case_sensitive)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        out: Scores = []
        for c in completions:
            text = c if self.case_sensitive else c.casefold()
            found = sum(s in text for s in self._needles)
            out.append(found / len(self._needles) if self.partial_credit else float(found == len(self._needles)))
        return out


@dataclass
class ForbiddenStringsScorer:
    """1.0 when none of the strings occurs in the completion, else 0.0."""

    name: ClassVar[str] = "forbidden_strings"
    strings: Sequence[str]  # the strings that must not occur
    case_sensitive: bool = True  # false: compare case-folded

    def __post_init__(self) -> None:
        self._needles = _needles(self.strings, "forbidden_strings", self.case_sensitive)

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        texts = completions if self.case_sensitive else [c.casefold() for c in completions]
        return [float(not any(s in t for s in self._needles)) for t in texts]


@dataclass
class JsonSchemaScorer:
    """1.0 when the completion holds JSON (a ```json block, or the first object/array in the text with
    extract="json"; the whole stripped text with extract="stripped") that validates against the JSON Schema;
    `parse_reward` when it parses but does not validate; 0.0 when no JSON parses. The schema comes from `schema`,
    `schema_path`, or per item from the context key `schema` (which wins); with none, parsing alone gives 1.0."""

    name: ClassVar[str] = "json_schema"
    schema: Mapping[str, Any] | None = None  # a JSON Schema (a table); the context key "schema" of a prompt wins
    schema_path: str | None = None  # a file holding the JSON Schema, instead of `schema`
    extract: str = "json"  # json (a ```json block, or the first object/array) or stripped (the whole reply)
    parse_reward: float = 0.0  # the score of JSON that parses but does not validate
    _counts: dict[str, int] = field(default_factory=lambda: {"parse_failures": 0, "schema_failures": 0},
                                    init=False, repr=False)

    def __post_init__(self) -> None:
        if self.extract not in ("json", "stripped"):
            raise ValueError(f"json_schema: extract must be 'json' or 'stripped', got {self.extract!r}")
        if self.schema is not None and self.schema_path is not None:
            raise ValueError("json_schema: give schema or schema_path, not both")
        if self.schema_path is not None:
            self.schema = json.loads(Path(self.schema_path).read_text())
        self._extract = get_extractor(self.extract)
        self._validators: dict[str, Any] = {}
        if self.schema is not None:
            self._validator(self.schema)  # a broken schema is a config error: raise now, not per candidate

    def _validator(self, schema: Mapping[str, Any]) -> Any:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            import jsonschema  # lazy: only this scorer needs it

            cls = jsonschema.validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema: invalid JSON Schema: {exc.message}") from exc
            self._validators[key] = cls(schema)
        return self._validators[key]

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        schemas = context.get("schema")
        out: Scores = []
        for j, c in enumerate(completions):
            text = self._extract(c)
            try:
                value = json.loads(text) if text is not None else None
                parsed = text is not None
            except json.JSONDecodeError:
                parsed = False
            if not parsed:
                self._counts["parse_failures"] += 1
                out.append(0.0)
                continue
            schema = schemas[j] if schemas is not None and schemas[j] is not None else self.schema
            if isinstance(schema, str):  # a schema given as JSON text
                schema = json.loads(schema)
            if schema is None or self._validator(schema).is_valid(value):
                out.append(1.0)
            else:
                self._counts["schema_failures"] += 1
                out.append(float(self.parse_reward))
        return out

    def metrics(self) -> dict[str, float]:
        """parse_failures (replies with no JSON that parses), schema_failures (JSON that does not validate); counts
        since the previous call."""
        out = {k: float(v) for k, v in self._counts.items()}
        self._counts.update({k: 0 for k in self._counts})
        return out
