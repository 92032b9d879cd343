"""Arithmetic checked ("arithmetic"): a label-free verifier of the work a reply shows. Every equation written as
`<expression> = <number>` must hold, and the final answer (the last "Answer: <number>", or the last number with
`answer_pattern` = "") must equal the last equation's result. It cannot tell whether the right quantities were
combined (that needs the label); it catches the slips that a vote alone cannot: "45 - 19 = 23".

Score: 1.0 when every equation holds and the answer follows from the last one; 0.0 when any does not; None when the
reply shows no equation (not applicable: combine it with a format rule that asks for the work).
Expressions: numbers, + - * / (also x, ×, ÷), parentheses; evaluated exactly with fractions, never with eval().
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

from tao_engine.scoring.base import Scores

# An expression (numbers, operators, parentheses, spaces) then "=" and a number that no operator continues: the
# number is the equation's stated result, not the start of a longer expression ("= 5 + 2 = 7" states 7).
_EQUATION = re.compile(r"((?:\d+(?:\.\d+)?|[()+\-*/x×÷\s])+?)=\s*(-?\d+(?:\.\d+)?)(?![\d.]*\s*[+\-*/x×÷]\s*\d)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
              ast.Div: lambda a, b: a / b}
MAX_DIGITS = 30  # longer numbers are not arithmetic a reply shows: refused, never computed


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None when it is not one (or divides by zero)."""
    text = expression.replace("×", "*").replace("÷", "/")
    text = re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", text).strip()
    if not text or any(len(n) > MAX_DIGITS for n in re.findall(r"\d+", text)):
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value,
                                                                                                      bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("not arithmetic")

    try:
        return walk(tree)
    except (ValueError, ZeroDivisionError):
        return None


def equations(text: str) -> list[tuple[str, Fraction | None, Fraction]]:
    """(expression, its value or None, the stated result) for each `expression = number` with an operator."""
    out = []
    for match in _EQUATION.finditer(text):
        expression = match.group(1).strip()
        if not re.search(r"\d\s*[+\-*/x×÷]\s*[\d(]", expression.replace("×", "*")):
            continue  # "Answer = 7" or "= 7" alone states a result, it computes nothing
        expression = expression.lstrip("+-*/x×÷ ")
        out.append((expression, evaluate(expression), Fraction(match.group(2))))
    return out


@dataclass
class ArithmeticScorer:
    name: ClassVar[str] = "arithmetic"
    answer_pattern: str = r"Answer:\s*(-?\d+(?:\.\d+)?)"  # the final answer: group 1; "" = the last number
    _counts: dict[str, int] = field(default_factory=lambda: {"no_work": 0, "wrong_step": 0, "unfollowed": 0},
                                    init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._answer = re.compile(self.answer_pattern) if self.answer_pattern else None
        except re.error as exc:
            raise ValueError(f"arithmetic: answer_pattern is not a regular expression: {exc}") from None

    def score(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Scores:
        return [self._one(c) for c in completions]

    def _one(self, text: str) -> float | None:
        found = equations(text)
        if not found:
            self._counts["no_work"] += 1
            return None
        if any(value is None or value != stated for _, value, stated in found):
            self._counts["wrong_step"] += 1
            return 0.0
        answers = self._answer.findall(text) if self._answer is not None else _NUMBER.findall(text)
        if answers and Fraction(answers[-1]) != found[-1][2]:
            self._counts["unfollowed"] += 1
            return 0.0
        return 1.0

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._counts.items()}
        for key in self._counts:
            self._counts[key] = 0
        return out
