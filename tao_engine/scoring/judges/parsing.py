"""Robust parsing of judge outputs: a score, a pairwise verdict, or one score per candidate id.

Judges write in many styles ("Score: 7/10", "**8**", `{"score": 8}`, "[[A]]", "Response B is better", a JSON object
of scores inside a ```json fence, sometimes after a <think> block). Each parser tries the most explicit forms first
and takes the judge's last statement of that form (the final verdict follows the reasoning). Nothing here raises on
odd text: an answer that cannot be read, or lies outside the scale, is None.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

Preference = Literal["A", "B", "tie"]

NUM = r"[-+]?\d+(?:\.\d+)?"
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_MARKUP = "*_`'\" \t\n.!:"
_SCORE_KEYS = ("score", "rating", "grade", "final_score", "overall_score", "overall")
_LABELED_SCORE = re.compile(
    rf"(?i:\b(?:final\s+|overall\s+|total\s+)?(?:score|rating|grade))[*_\s]*(?:\([^)\n]{{0,40}}\))?[*_\s]*"
    rf"(?:(?i:is|of)\b|[:=])?[*_\s]*(?:\[\[)?\s*(?P<value>{NUM})\s*(?:\]\])?"
    rf"(?:\s*(?:/|(?i:out\s+of))\s*(?P<denominator>{NUM}))?"
)
_BRACKETED = re.compile(rf"\[\[\s*(?P<value>{NUM})\s*\]\]")
_FRACTION = re.compile(rf"(?P<value>{NUM})\s*(?:/|(?i:out\s+of))\s*(?P<denominator>{NUM})")
_BOLD = re.compile(rf"\*\*\s*(?P<value>{NUM})\s*\*\*")


def strip_thinking(text: str) -> str:
    """Drop <think>...</think> blocks (an unclosed one runs to the end: the judge never gave its answer)."""
    return _THINK.sub(" ", text)


# ---- JSON inside free text ---------------------------------------------------------------------------------------


def _closing(text: str, start: int) -> int | None:
    """Index just past the bracket matching text[start] ('{' or '['), skipping quoted strings; None if unbalanced."""
    depth, quote, escaped = 0, None, False
    for k in range(start, len(text)):
        ch = text[k]
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return k + 1
    return None


def _loads_lenient(snippet: str) -> Any:
    try:
        return json.loads(snippet)
    except ValueError:
        pass
    cleaned = re.sub(r",\s*([}\]])", r"\1", snippet)  # trailing commas
    try:
        return json.loads(cleaned)
    except ValueError:
        pass
    try:  # single-quoted Python literals: literal_eval evaluates literals only, never code
        return ast.literal_eval(cleaned)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def extract_json_values(text: str) -> list[Any]:
    """Every outermost JSON (or Python-literal) object or array in `text`, in order of appearance."""
    found: list[Any] = []
    k = 0
    while k < len(text):
        if text[k] in "{[":
            end = _closing(text, k)
            if end is not None:
                value = _loads_lenient(text[k:end])
                if isinstance(value, (dict, list)):
                    found.append(value)
                    k = end
                    continue
        k += 1
    return found


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = re.fullmatch(rf"\s*({NUM})\s*(?:/\s*{NUM})?\s*", value)
        return float(match.group(1)) if match else None
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower() in _SCORE_KEYS:
                return _as_number(inner)
    return None


def _in_range(value: float | None, low: float, high: float) -> float | None:
    return value if value is not None and low <= value <= high else None


# ---- pointwise scores ------------------------------------------------------------------------------------------


def _json_score(text: str) -> tuple[bool, float | None]:
    last: tuple[bool, float | None] = (False, None)
    for value in extract_json_values(text):
        if isinstance(value, dict):
            for key, inner in value.items():
                if str(key).lower() in _SCORE_KEYS:
                    last = (True, _as_number(inner))
    return last


def parse_score(text: str, min_score: float, max_score: float) -> float | None:
    """The judge's score on [min_score, max_score], or None (unreadable, or outside the scale).

    Forms, most explicit first (the last occurrence of the first form present wins): a JSON object with a "score"
    (or "rating", "grade") key; "Score: 7", "Rating: 8/10", "**Final score:** 6.5 out of 10"; "[[8]]"; "7/10" with
    the scale's maximum as denominator; "**8**"; a reply that is only a number. A fraction whose denominator is not
    `max_score` (the judge used another scale) reads as None.
    """
    if not isinstance(text, str):
        return None
    text = strip_thinking(text)
    found, value = _json_score(text)
    if found:
        return _in_range(value, min_score, max_score)
    labeled = list(_LABELED_SCORE.finditer(text))
    if labeled:
        return _fraction_value(labeled[-1], min_score, max_score)
    for pattern in (_BRACKETED, _FRACTION, _BOLD):
        matches = list(pattern.finditer(text))
        if pattern is _FRACTION:
            matches = [m for m in matches if float(m.group("denominator")) == max_score]
        if matches:
            return _fraction_value(matches[-1], min_score, max_score)
    bare = text.strip(_MARKUP)
    if re.fullmatch(NUM, bare):
        return _in_range(float(bare), min_score, max_score)
    return None


def _fraction_value(match: re.Match[str], min_score: float, max_score: float) -> float | None:
    denominator = match.groupdict().get("denominator")
    if denominator is not None and float(denominator) != max_score:
        return None
    return _in_range(float(match.group("value")), min_score, max_score)


# ---- pairwise verdicts -----------------------------------------------------------------------------------------

_VERDICT_KEYS = ("winner", "preference", "preferred", "better", "better_response", "choice", "verdict", "answer")
_TIE_WORDS = r"(?:tie|draw|equal|equally\s+good|both|neither|same)"
_LETTER = r"(?:response|answer|assistant|output|option|candidate)?\s*\(?(?P<letter>[AB])\)?(?![A-Za-z0-9])"
_VERDICT_LABEL = (
    r"(?i:\b(?:final\s+)?(?:winner|verdict|preferred(?:\s+response)?|preference|better\s+response|"
    r"final\s+answer|answer|choice|decision))[*_\s]*(?:(?i:is)\b|[:=])?[*_\s\"'(\[]*"
)
_LABELED_VERDICT = re.compile(_VERDICT_LABEL + rf"(?:(?i:{_LETTER})|(?i:(?P<tie>{_TIE_WORDS}))\b)")
_BRACKETED_VERDICT = re.compile(r"\[\[\s*(?P<letter>[ABC]|(?i:tie))\s*\]\]")
_SENTENCE_VERDICT = re.compile(
    r"(?i:\b(?:response|answer|assistant|output|option|candidate))\s+\(?(?P<letter>[AB])\)?\s+"
    r"(?i:is|was)\s+(?i:(?:clearly|slightly|much|far|significantly|definitely)\s+)?"
    r"(?i:better|superior|preferred|stronger|more\s+\w+)"
    r"|(?i:\bI\s+(?:would\s+)?(?:prefer|choose|pick|select))\s+(?i:response\s+|answer\s+|option\s+)?(?P<pick>[AB])\b"
)
_TIE_SENTENCE = re.compile(r"(?i:\b(?:it'?s|it\s+is|this\s+is)\s+a\s+(?:tie|draw)\b|\bboth\s+(?:responses\s+)?are\s+"
                           r"equally\s+(?:good|bad)\b)")


def _verdict_of(value: Any) -> Preference | None:
    if not isinstance(value, str):
        return None
    word = value.strip(_MARKUP + "()[]").lower()
    word = re.sub(r"^(?:response|answer|assistant|output|option|candidate)\s*", "", word)
    if word in ("a", "b"):
        return word.upper()  # type: ignore[return-value]
    if re.fullmatch(_TIE_WORDS + r"|c", word):
        return "tie"
    return None


def parse_preference(text: str) -> Preference | None:
    """The judge's verdict between responses A and B: "A", "B", "tie", or None when it cannot be read.

    Forms: a JSON object with a "winner" (or "preference", "choice", "verdict"...) key; "[[A]]" / "[[B]]" /
    "[[C]]" (tie, as in MT-Bench); "Winner: A", "**Verdict:** Response B", "Final answer: tie"; "Response A is
    better", "I prefer B"; "It's a tie"; a reply that is only "A", "B" or "tie". JSON wins; otherwise the last
    verdict in the text wins.
    """
    if not isinstance(text, str):
        return None
    text = strip_thinking(text)
    json_verdict: Preference | None = None
    for value in extract_json_values(text):
        if isinstance(value, dict):
            for key, inner in value.items():
                if str(key).lower() in _VERDICT_KEYS:
                    json_verdict = _verdict_of(inner) or json_verdict
    if json_verdict is not None:
        return json_verdict
    found: list[tuple[int, Preference]] = []
    for match in _BRACKETED_VERDICT.finditer(text):
        letter = match.group("letter").upper()
        found.append((match.start(), "tie" if letter in ("C", "TIE") else letter))  # type: ignore[arg-type]
    for match in _LABELED_VERDICT.finditer(text):
        found.append((match.start(), "tie" if match.group("tie") else match.group("letter")))  # type: ignore[arg-type]
    for match in _SENTENCE_VERDICT.finditer(text):
        found.append((match.start(), match.group("letter") or match.group("pick")))  # type: ignore[arg-type]
    for match in _TIE_SENTENCE.finditer(text):
        found.append((match.start(), "tie"))
    if found:
        return max(found, key=lambda item: item[0])[1]
    return _verdict_of(text) if len(text.strip()) <= 20 else None


# ---- one score per candidate -------------------------------------------------------------------------------------

_ID_KEY = re.compile(r"\s*(?:candidate|response|answer|id|option)?[\s_#-]*(\d+)\s*", re.I)
_SCORE_LINE = re.compile(
    rf"^[\s>*_#\-]*(?i:candidate|response|answer|id|option)?[\s_#*]*(?P<id>\d+)[*_\s)\]]*"
    rf"(?:\((?i:score)\))?[*_\s]*[:=\-\u2013\u2014][*_\s]*(?:(?i:score)[*_\s]*[:=]?[*_\s]*)?(?P<value>{NUM})"
    rf"(?:\s*(?:/|(?i:out\s+of))\s*(?P<denominator>{NUM}))?",
    re.M,
)


def _id_of(key: Any) -> str | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return str(key)
    match = _ID_KEY.fullmatch(str(key)) if isinstance(key, str) else None
    return str(int(match.group(1))) if match else None


def _scores_from_json(value: Any, ids: Sequence[str]) -> dict[str, float | None]:
    """Read {"1": 7, ...}, {"scores": {...}}, {"scores": [{"id": 1, "score": 7}, ...]}, [{"id":..}, ...], or
    {"scores": [7, 3, ...]} (in candidate order)."""
    if isinstance(value, dict):
        nested = next((v for k, v in value.items() if str(k).lower() in ("scores", "ratings", "results")), None)
        if nested is not None:
            return _scores_from_json(nested, ids)
        return {i: _as_number(v) for k, v in value.items() if (i := _id_of(k)) is not None}
    if isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return {i: float(v) for i, v in zip(ids, value, strict=False)} if len(value) == len(ids) else {}
        out: dict[str, float | None] = {}
        for item in value:
            if isinstance(item, dict):
                key = next((item[k] for k in item if str(k).lower() in ("id", "candidate", "response", "index")), None)
                candidate = _id_of(key)
                if candidate is not None:
                    out[candidate] = _as_number(item)
        return out
    return {}


def parse_group_scores(
    text: str, ids: Sequence[str], min_score: float, max_score: float
) -> dict[str, float | None]:
    """One score per candidate id (ids are "1", "2", ...): JSON first (the last object naming any of the ids),
    else lines like "Candidate 2: 7/10" or "- **3**: 5". Missing ids and out-of-scale scores are None."""
    out: dict[str, float | None] = dict.fromkeys(ids)
    if not isinstance(text, str):
        return out
    text = strip_thinking(text)
    wanted = set(ids)
    parsed: dict[str, float | None] = {}
    for value in extract_json_values(text):
        candidate = {k: v for k, v in _scores_from_json(value, ids).items() if k in wanted}
        if candidate:
            parsed = candidate
    if not parsed:
        for match in _SCORE_LINE.finditer(text):
            key = str(int(match.group("id")))
            if key in wanted:
                denominator = match.group("denominator")
                ok = denominator is None or float(denominator) == max_score
                parsed[key] = float(match.group("value")) if ok else None
    for key, value in parsed.items():
        out[key] = _in_range(value, min_score, max_score)
    return out
