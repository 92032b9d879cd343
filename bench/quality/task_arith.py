"""Arithmetic word problems of one and two steps, answered on a last line "Answer: <number>".

correct: the number on the reply's last "Answer:" line equals the gold answer.
label-free reward: majority vote over that number (TTRL), the arithmetic of the work shown ("arithmetic": every
equation holds and the answer follows from the last one) and a format rule (the reply ends with "Answer: <n>").
With votes and the format rule alone, a development run (probe split) went 0.167 -> 0.188: sampled answers agreed
on wrong results ever more (pass rate 0.34 at step 3, 0.19 at step 12) and the held-out score kept step 6; the
arithmetic check is what a user would add against that.
The demonstration is a one-step problem: with a two-step demonstration SmolLM2-135M computes two steps for every
problem and got 0 of 40 one-step problems right greedily (the earlier benchmark's math task sits there).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from bench.quality.splits import Splits, draw_splits

NAMES = ("Maya", "Leo", "Sofia", "Omar", "Hana", "Lucas", "Amara", "Noah", "Ines", "Kenji", "Zara", "Theo", "Lina",
         "Ravi", "Elsa", "Diego")
ITEMS = ("marbles", "stickers", "pencils", "cards", "stamps", "shells", "beads", "coins", "apples", "books")
INSTRUCTION = "\nGive the final answer on the last line in the form: Answer: <number>"
DEMO = ("Tom has 4 apples and buys 3 more. How many apples does Tom have now?", "4 + 3 = 7\nAnswer: 7")
SCORERS = (
    {"name": "majority_vote", "extractor": "last_number", "weight": 1.0},
    {"name": "arithmetic", "weight": 1.0},
    {"name": "regex", "label": "format", "pattern": r"Answer:\s*-?\d+\s*$", "weight": 0.25},
)
MAX_TOKENS = 48
_ANSWER = re.compile(r"Answer:\s*(-?\d+)")


def _problem(rng: random.Random) -> tuple[str, int, int]:
    """(text, answer, steps)"""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        a, b = rng.randint(3, 40), rng.randint(2, 30)
        return f"{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?", a + b, 1
    if kind == 1:
        b, left = rng.randint(2, 30), rng.randint(1, 40)
        return f"{name} has {left + b} {item} and gives {b} to a friend. How many {item} are left?", left, 1
    if kind == 2:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return f"{name} buys {a} boxes with {b} {item} in each box. How many {item} is that in total?", a * b, 1
    if kind == 3:
        b, c = rng.randint(2, 9), rng.randint(2, 9)
        return (f"{name} shares {b * c} {item} equally among {b} friends. How many {item} does each friend get?",
                c, 1)
    if kind == 4:
        a, b = rng.randint(5, 30), rng.randint(2, 20)
        c = rng.randint(1, a + b - 1)
        return (f"{name} has {a} {item}, buys {b} more and then loses {c}. How many {item} does {name} have now?",
                a + b - c, 2)
    a, b, c = rng.randint(2, 6), rng.randint(2, 9), rng.randint(1, 9)
    return (f"{name} buys {a} packs of {b} {item} and gets {c} more as a gift. How many {item} does {name} have?",
            a * b + c, 2)


def messages(problem: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": DEMO[0] + INSTRUCTION}, {"role": "assistant", "content": DEMO[1]},
            {"role": "user", "content": problem + INSTRUCTION}]


def draw(rng: random.Random) -> dict[str, Any]:
    text, answer, steps = _problem(rng)
    return {"messages": messages(text), "problem": text, "steps": steps, "answer": answer}


def generate(seed: int = 0, sizes: dict[str, int] | None = None) -> Splits:
    return draw_splits(draw, lambda r: r["problem"], "arith", seed, sizes)


def final_answer(reply: str) -> str | None:
    found = _ANSWER.findall(reply)
    return found[-1] if found else None


def is_correct(reply: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    found = final_answer(reply)
    return found is not None and int(found) == int(gold["answer"])


def gold_completion(gold: Mapping[str, Any]) -> str:
    return f"Answer: {gold['answer']}"
