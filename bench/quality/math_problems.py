"""Templated arithmetic word problems with integer answers computed in code: five templates for each of one, two
and three steps. Values are drawn so that every intermediate result is a non-negative integer (divisions are exact,
change and leftovers are positive). Split by template instance: each template gives its first 4 distinct problems
to test and the rest to train."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MATH_SYSTEM_PROMPT = ("You are a careful math tutor. Solve the word problem step by step, then give the final "
                      "answer.")
TEST_PER_TEMPLATE = 4
TRAIN_PER_STEPS = {1: 54, 2: 53, 3: 53}  # 160 train problems

NAMES = ("Maya", "Leo", "Sofia", "Omar", "Hana", "Lucas", "Amara", "Noah", "Ines", "Kenji", "Zara", "Theo", "Lina",
         "Ravi", "Elsa", "Diego")
ITEMS = ("marbles", "stickers", "pencils", "cards", "stamps", "shells", "beads", "coins")


# One worked turn before the question (a problem of none of the templates): SmolLM2-135M then ends 46 of 60 greedy
# test answers within 80 tokens (32 of 60 without it), most with the "Answer: <n>" line that the format rule and the
# answer extractor read.
DEMO_PROBLEM = "A farmer has 3 baskets with 12 apples in each basket. He eats 5 apples. How many apples are left?"
DEMO_SOLUTION = ("3 baskets with 12 apples each is 3 * 12 = 36 apples.\nAfter eating 5, 36 - 5 = 31 apples are left.\n"
                 "Answer: 31")


def math_user_prompt(problem: str) -> str:
    # No example number in the instruction: asked "like: Answer: 42", SmolLM2-135M answered 42 in 157 of 480 samples
    # (T 0.7), a consensus that majority voting then rewards.
    return f"{problem}\nEnd with the final answer on the last line, in the form: Answer: <number>"


def math_messages(problem: str) -> list[dict[str, str]]:
    """The chat every method is prompted with: system prompt, the worked demonstration turn, the problem."""
    return [{"role": "system", "content": MATH_SYSTEM_PROMPT},
            {"role": "user", "content": math_user_prompt(DEMO_PROBLEM)},
            {"role": "assistant", "content": DEMO_SOLUTION},
            {"role": "user", "content": math_user_prompt(problem)}]


@dataclass(frozen=True)
class MathTemplate:
    key: str
    steps: int
    text: str  # str.format template over the drawn values
    draw: Callable[[random.Random], dict[str, Any]]
    answer: Callable[[dict[str, Any]], int]


@dataclass(frozen=True)
class MathProblem:
    text: str
    answer: int
    steps: int
    template: str
    values: dict[str, Any]


def _name_item(r: random.Random) -> dict[str, Any]:
    return {"name": r.choice(NAMES), "item": r.choice(ITEMS)}


def _share(r: random.Random) -> dict[str, Any]:
    each, friends = r.randint(2, 15), r.randint(2, 9)
    return {"name": r.choice(NAMES), "total": each * friends, "friends": friends}


def _bags(r: random.Random) -> dict[str, Any]:
    size, bags = r.randint(3, 9), r.randint(4, 15)
    apples = r.randint(2, size * bags - 2)
    return {"size": size, "apples": apples, "oranges": size * bags - apples}


def _shopping(r: random.Random) -> dict[str, Any]:
    v = {"name": r.choice(NAMES), "shirts": r.randint(2, 5), "shirt_price": r.randint(8, 25),
         "hats": r.randint(1, 4), "hat_price": r.randint(5, 15)}
    total = v["shirts"] * v["shirt_price"] + v["hats"] * v["hat_price"]
    v["bill"] = next(b for b in (50, 100, 200) if b > total)
    return v


def _teams(r: random.Random) -> dict[str, Any]:
    classes, size, teams = r.randint(3, 8), r.randint(20, 30), r.randint(3, 6)
    per_team = (classes * size - 1) // teams - r.randint(1, 4)  # leaves more than `teams` absent
    return {"classes": classes, "size": size, "teams": teams, "absent": classes * size - teams * per_team}


def _gifts(r: random.Random) -> dict[str, Any]:
    weekly, weeks, gifts, each = r.randint(5, 20), r.randint(4, 12), r.randint(2, 5), r.randint(3, 12)
    spent = weekly * weeks - gifts * each
    if spent <= 0:  # saved too little for a bike: raise the weekly amount until it is positive
        weekly += (gifts * each) // weeks + 1
        spent = weekly * weeks - gifts * each
    return {"name": r.choice(NAMES), "weekly": weekly, "weeks": weeks, "spent": spent, "gifts": gifts}


def _bruised(r: random.Random) -> dict[str, Any]:
    v = {"rows": r.randint(3, 9), "plants": r.randint(4, 12), "per_plant": r.randint(3, 10)}
    v["bad"] = r.randint(2, v["rows"] * v["plants"] * v["per_plant"] // 4)
    return v


TEMPLATES: tuple[MathTemplate, ...] = (
    MathTemplate("add", 1, "{name} has {a} {item}. A friend gives {name} {b} more {item}. How many {item} does {name} "
                 "have now?", lambda r: {**_name_item(r), "a": r.randint(5, 90), "b": r.randint(3, 60)},
                 lambda v: v["a"] + v["b"]),
    MathTemplate("subtract", 1, "A bakery baked {a} muffins in the morning and sold {b} of them by noon. How many "
                 "muffins were left at noon?", lambda r: (lambda a: {"a": a, "b": r.randint(1, a - 1)})(
                     r.randint(20, 200)), lambda v: v["a"] - v["b"]),
    MathTemplate("multiply", 1, "Each box holds {a} {item}. How many {item} are there in {b} full boxes?",
                 lambda r: {"item": r.choice(ITEMS), "a": r.randint(3, 25), "b": r.randint(2, 12)},
                 lambda v: v["a"] * v["b"]),
    MathTemplate("divide", 1, "{name} shares {total} stickers equally among {friends} friends. How many stickers "
                 "does each friend get?", _share, lambda v: v["total"] // v["friends"]),
    MathTemplate("unit_cost", 1, "A notebook costs {a} dollars. How many dollars do {b} notebooks cost?",
                 lambda r: {"a": r.randint(2, 15), "b": r.randint(2, 20)}, lambda v: v["a"] * v["b"]),
    MathTemplate("packs_give", 2, "{name} buys {packs} packs of {item} with {per} {item} in each pack, then gives "
                 "away {given} {item}. How many {item} does {name} have left?",
                 lambda r: (lambda v: {**v, "given": r.randint(2, v["packs"] * v["per"] - 1)})(
                     {**_name_item(r), "packs": r.randint(2, 9), "per": r.randint(3, 12)}),
                 lambda v: v["packs"] * v["per"] - v["given"]),
    MathTemplate("train_seats", 2, "A train has {cars} cars with {seats} seats in each car. On one trip {empty} "
                 "seats are empty. How many seats are taken?",
                 lambda r: (lambda v: {**v, "empty": r.randint(2, v["cars"] * v["seats"] - 1)})(
                     {"cars": r.randint(3, 10), "seats": r.randint(20, 60)}),
                 lambda v: v["cars"] * v["seats"] - v["empty"]),
    MathTemplate("wage", 2, "{name} earns {wage} dollars per hour, and works {h1} hours on Monday and {h2} hours "
                 "on Tuesday. How many dollars does {name} earn on the two days together?",
                 lambda r: {"name": r.choice(NAMES), "wage": r.randint(8, 30), "h1": r.randint(2, 9),
                            "h2": r.randint(2, 9)}, lambda v: v["wage"] * (v["h1"] + v["h2"])),
    MathTemplate("fruit_bags", 2, "A farmer picks {apples} apples and {oranges} oranges and packs all the fruit into "
                 "bags of {size}. How many bags does the farmer fill?", _bags,
                 lambda v: (v["apples"] + v["oranges"]) // v["size"]),
    MathTemplate("reading", 2, "{name} reads {per_day} pages a day for {days} days, and then {last} pages on the "
                 "next day. How many pages does {name} read in all?",
                 lambda r: {"name": r.choice(NAMES), "per_day": r.randint(5, 40), "days": r.randint(2, 9),
                            "last": r.randint(1, 30)}, lambda v: v["per_day"] * v["days"] + v["last"]),
    MathTemplate("change", 3, "{name} buys {shirts} shirts at {shirt_price} dollars each and {hats} hats at "
                 "{hat_price} dollars each, and pays with a {bill}-dollar bill. How many dollars of change does "
                 "{name} get?", _shopping,
                 lambda v: v["bill"] - v["shirts"] * v["shirt_price"] - v["hats"] * v["hat_price"]),
    MathTemplate("teams", 3, "A school has {classes} classes with {size} students in each class. {absent} students "
                 "are absent, and the students who are present are split equally into {teams} teams. How many "
                 "students are on each team?", _teams,
                 lambda v: (v["classes"] * v["size"] - v["absent"]) // v["teams"]),
    MathTemplate("crates", 3, "A shop had {start} bottles of juice. It received {crates} crates with {per} bottles "
                 "in each crate, and then sold {sold} bottles. How many bottles does the shop have now?",
                 lambda r: (lambda v: {**v, "sold": r.randint(2, v["start"] + v["crates"] * v["per"] - 1)})(
                     {"start": r.randint(10, 80), "crates": r.randint(2, 9), "per": r.randint(6, 24)}),
                 lambda v: v["start"] + v["crates"] * v["per"] - v["sold"]),
    MathTemplate("gifts", 3, "{name} saves {weekly} dollars every week for {weeks} weeks, spends {spent} dollars "
                 "on a bike, and splits the rest equally among {gifts} gifts. How many dollars does each gift "
                 "cost?", _gifts, lambda v: (v["weekly"] * v["weeks"] - v["spent"]) // v["gifts"]),
    MathTemplate("tomatoes", 3, "A garden has {rows} rows with {plants} tomato plants in each row. Each plant gives "
                 "{per_plant} tomatoes, and {bad} tomatoes are thrown away because they are bruised. How many good "
                 "tomatoes are left?", _bruised,
                 lambda v: v["rows"] * v["plants"] * v["per_plant"] - v["bad"]),
)


def draw_problems(template: MathTemplate, count: int, seed: int) -> list[MathProblem]:
    """`count` problems of `template` with distinct texts, in a seeded order."""
    rng = random.Random(f"tao-bench-math:{template.key}:{seed}")
    out: list[MathProblem] = []
    seen: set[str] = set()
    for _ in range(count * 50):
        if len(out) == count:
            break
        values = template.draw(rng)
        text = template.text.format(**values)
        if text in seen:
            continue
        answer = template.answer(values)
        if answer < 0:
            raise AssertionError(f"math template {template.key}: negative answer {answer} for {values}")
        seen.add(text)
        out.append(MathProblem(text, answer, template.steps, template.key, values))
    if len(out) < count:
        raise ValueError(f"math template {template.key}: only {len(out)} distinct problems of the {count} needed")
    return out


def generate_problems(seed: int = 0) -> tuple[list[MathProblem], list[MathProblem]]:
    """(train, test): TEST_PER_TEMPLATE test problems per template, TRAIN_PER_STEPS train problems per step count
    spread over that count's templates; seeded order."""
    train: list[MathProblem] = []
    test: list[MathProblem] = []
    for steps, n_train in TRAIN_PER_STEPS.items():
        group = [t for t in TEMPLATES if t.steps == steps]
        for i, template in enumerate(group):
            share = n_train // len(group) + (i < n_train % len(group))
            drawn = draw_problems(template, TEST_PER_TEMPLATE + share, seed)
            test.extend(drawn[:TEST_PER_TEMPLATE])
            train.extend(drawn[TEST_PER_TEMPLATE:])
    rng = random.Random(f"tao-bench-math-split:{seed}")
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def math_record(problem: MathProblem) -> dict[str, Any]:
    return {
        "messages": math_messages(problem.text),
        "answer": str(problem.answer),
        "steps": problem.steps,
    }
