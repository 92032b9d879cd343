"""The scorer reference: what every built-in scorer of the registry computes, the keys its `[[scoring.scorers]]`
table takes (type, default, meaning) and the metrics it reports, generated from the code (`BUILTIN_SCORERS`, the
classes' docstrings and the comments on their fields). `tao-engine scorers [NAME]` prints it; docs/scorers.md holds
the same text in Markdown (`python -m tao_engine.scoring.reference > docs/scorers.md`; a test keeps it current).
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass

from tao_engine.config_docs import FieldDoc, format_default, param_docs
from tao_engine.scoring.registry import BUILTIN_SCORERS, import_object

COMMON_KEYS = (
    ("name", "the built-in name below, or \"module:function\" / \"module:Class\" for your own"),
    ("weight", "its share of the combined reward (default 1.0; see [scoring] combine)"),
    ("label", "the name its metrics are logged under (default: the scorer's name)"),
    ("timeout_s", "a limit on each call: a call past it scores None and is counted in <label>/timeouts (a sync "
                  "scorer then runs in a worker process that is killed; not for scorers that hold a model)"),
)


@dataclass(frozen=True)
class ScorerEntry:
    name: str  # the registry name
    target: str  # the import path it maps to
    kind: str  # "pointwise" (each candidate alone) or "group" (the n candidates of a prompt together)
    summary: str  # what it computes
    params: list[FieldDoc]  # the keys of its table besides COMMON_KEYS
    metrics: str  # what its metrics() reports ("" when it reports none)


def scorer_entries() -> list[ScorerEntry]:
    """One entry per name in BUILTIN_SCORERS, in the registry's order."""
    out = []
    for name, target in BUILTIN_SCORERS.items():
        cls = import_object(target)
        summary = _summary(cls)
        kind = "group" if callable(getattr(cls, "score_groups", None)) else "pointwise"
        metrics = getattr(cls, "metrics", None)
        out.append(ScorerEntry(name, target, kind, summary or "", param_docs(cls),
                               inspect.getdoc(metrics) or "" if metrics is not None else ""))
    return out


def _summary(cls: type) -> str:
    """The class docstring; the module's when the class has none (a dataclass's made-up signature does not count) or
    when the class's points to it."""
    own = inspect.getdoc(cls) or ""
    if own.startswith(f"{cls.__name__}("):  # dataclasses write the signature into a missing docstring
        own = ""
    module = inspect.getdoc(sys.modules[cls.__module__]) or ""
    if not own:
        return module
    return f"{own}\n\n{module}" if "module docstring" in own else own


def reference_markdown() -> str:
    lines = ["# Scorers", "",
             "Generated from `tao_engine.scoring.registry.BUILTIN_SCORERS` by `python -m tao_engine.scoring.reference`"
             " (also `tao-engine scorers`); do not edit by hand.", "",
             "Every `[[scoring.scorers]]` table takes these keys besides the scorer's own:", "",
             "| key | meaning |", "|---|---|", *[f"| `{k}` | {m} |" for k, m in COMMON_KEYS], "",
             "| scorer | kind | computes |", "|---|---|---|"]
    for e in scorer_entries():
        lines.append(f"| [`{e.name}`](#{e.name}) | {e.kind} | {_first_sentence(e.summary)} |")
    for e in scorer_entries():
        lines += ["", f"## {e.name}", "", f"{e.kind} scorer, `{e.target}`.", "", e.summary, ""]
        if e.params:
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
            lines += [f"| `{p.name}` | `{_cell(p.type)}` | `{_cell(format_default(p.default))}` | {_cell(p.meaning)} |"
                      for p in e.params]
            lines.append("")
        if e.metrics:
            lines += [f"Metrics (logged as `score/<label>/<metric>`): {e.metrics}", ""]
    return "\n".join(lines).rstrip() + "\n"


def reference_text(name: str | None = None) -> str:
    """The reference for one scorer (or all of them) as plain text for a terminal."""
    entries = scorer_entries()
    if name is not None:
        entries = [e for e in entries if e.name == name]
        if not entries:
            raise ValueError(f"scorers: no built-in scorer {name!r}; the names are {sorted(BUILTIN_SCORERS)}")
    lines = ["Keys of every [[scoring.scorers]] table, besides the scorer's own:"]
    lines += [line for key, meaning in COMMON_KEYS for line in _indented(f"{key}: {meaning}", 4)]
    for e in entries:
        lines += ["", f"{e.name}  ({e.kind})", *_indented(e.summary, 4)]
        for p in e.params:
            lines.append(f"    {p.name} = {format_default(p.default)}    ({p.type})")
            lines += _indented(p.meaning, 8)
        if e.metrics:
            lines += _indented(f"metrics: {e.metrics}", 4)
    return "\n".join(lines) + "\n"


def _first_sentence(text: str) -> str:
    """Up to the first full stop, or the colon that opens a list."""
    end = re.search(r"\.\s|:\s*\n", text)
    return _cell(text if end is None else text[: end.start() + 1])


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _indented(text: str, spaces: int) -> list[str]:
    """`text` wrapped at the terminal's width: paragraphs and "- " list items kept apart."""
    import textwrap

    blocks: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("- ") or not blocks:
            blocks.append([])
        if stripped:
            blocks[-1].append(stripped)
    pad = " " * spaces
    out = []
    for block in blocks:
        if block:
            item = "  " if block[0].startswith("- ") else ""
            out += textwrap.wrap(" ".join(block), 118, initial_indent=pad, subsequent_indent=pad + item)
    return out


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
