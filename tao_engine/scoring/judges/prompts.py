"""Judge prompt templates: one user message each, the shared part first.

Order inside every prompt: fixed instructions and the rubric (shared by all judge calls), then the task prompt
(shared by every call about the same task's candidates), then the candidate(s), then a one-line reminder of the
answer format. Requests about one task thus share a long token prefix, which the engine's prefix cache computes once.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_RUBRIC = (
    "A good response is correct, complete and directly answers the task. It follows every instruction in the task, "
    "is clear and concise, and contains no made-up facts."
)
TRUNCATION_MARK = "\n[... truncated ...]\n"

_POINTWISE = """You are an impartial judge. Rate the quality of a response to the task below.

Criteria:
{rubric}

Give a score from {low} to {high}, where {high} is best. You may reason briefly first; then end with a line of the \
form "Score: <number>".

# Task
{prompt}

# Response
{response}

Rate the response. End with "Score: <number from {low} to {high}>"."""

_PAIRWISE = """You are an impartial judge. Compare two responses to the task below and decide which one is better.

Criteria:
{rubric}

Do not let the order of the responses or their length sway you. You may reason briefly first; then end with a line \
of the form "Winner: A", "Winner: B" or "Winner: tie".

# Task
{prompt}

# Response A
{a}

# Response B
{b}

Which response is better? End with "Winner: A", "Winner: B" or "Winner: tie"."""

_GROUP = """You are an impartial judge. Several candidate responses to the task below follow; score each one, \
comparing them with one another.

Criteria:
{rubric}

Give every candidate a score from {low} to {high}, where {high} is best; better candidates get higher scores. Reply \
with a JSON object that maps each candidate id to its score, for example {{"1": 7, "2": 3}}.

# Task
{prompt}

{candidates}

Reply with the JSON object of scores for candidates {first} to {last}."""


def truncate_middle(text: str, max_chars: int | None) -> str:
    """Keep the start and the end of an over-long response (its answer is often at the end)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + TRUNCATION_MARK + text[len(text) - (max_chars - head) :]


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def pointwise_prompt(prompt: str, response: str, rubric: str, low: float, high: float) -> str:
    return _POINTWISE.format(rubric=rubric, prompt=prompt, response=response, low=format_number(low),
                             high=format_number(high))


def pairwise_prompt(prompt: str, a: str, b: str, rubric: str) -> str:
    return _PAIRWISE.format(rubric=rubric, prompt=prompt, a=a, b=b)


def group_prompt(prompt: str, candidates: Sequence[str], ids: Sequence[str], rubric: str, low: float,
                 high: float) -> str:
    blocks = "\n\n".join(f"# Candidate {i}\n{text}" for i, text in zip(ids, candidates, strict=True))
    return _GROUP.format(rubric=rubric, prompt=prompt, candidates=blocks, low=format_number(low),
                         high=format_number(high), first=ids[0], last=ids[-1])
