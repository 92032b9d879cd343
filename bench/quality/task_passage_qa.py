"""Short-answer questions about a short passage, answered with a phrase copied from it.

Measured on SmolLM2-135M-Instruct before choosing it (40 items, the prompt below with one demonstration turn):
greedy exact match 0.225, pass@16 at T 0.7 0.50; the gold phrase is inside 0.65 of the greedy replies, which
often go on with the rest of the sentence or add one of their own.

correct: the reply, normalized (case, punctuation, articles, spacing), equals the gold phrase normalized.
label-free reward: the reply is a span of the passage of at most 4 words ("grounded", span mode) and agrees with
the group's majority reply ("majority_vote" on the stripped reply).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from typing import Any

from bench.quality.splits import Splits, draw_splits

NAMES = ("Maya", "Leo", "Sofia", "Omar", "Hana", "Lucas", "Amara", "Noah", "Ines", "Kenji", "Zara", "Theo", "Lina",
         "Ravi", "Elsa", "Diego", "Mira", "Jonas")
COLORS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple", "grey", "brown")
VEHICLES = ("bike", "car", "boat", "van", "scooter", "truck")
PLACES = ("the market", "the library", "the harbor", "the bakery", "the park", "the station", "the museum",
          "the school", "the river", "the farm")
GOODS = ("bread", "apples", "fish", "cheese", "rice", "oranges", "honey", "tea", "flowers", "eggs")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PETS = ("dog", "cat", "parrot", "rabbit", "goat", "horse", "turtle")
PET_NAMES = ("Biscuit", "Luna", "Pepper", "Milo", "Nala", "Rocky", "Olive", "Ziggy", "Mango", "Clover")
PASSAGES = (
    "{name} owns a {color} {vehicle}. Every {day}, {p} rides it to {place} to buy {goods}. {name} lives with a {pet} "
    "called {pet_name}, who always waits by the door.",
    "Every {day} {name} takes the {color} {vehicle} to {place}, where {p} buys {goods}. At home a {pet} named "
    "{pet_name} waits for {q}.",
    "{name} has a {pet} called {pet_name}. On {day}s they go to {place} in {name}'s {color} {vehicle}, and {name} "
    "buys {goods} there.",
)
QUESTIONS = (
    ("What color is {name}'s {vehicle}?", "color"),
    ("Where does {name} go every {day}?", "place"),
    ("What does {name} buy?", "goods"),
    ("On which day does {name} go to {place}?", "day"),
    ("What is the name of {name}'s {pet}?", "pet_name"),
    ("What kind of animal is {pet_name}?", "pet"),
)
INSTRUCTION = "Answer the question with a short phrase copied from the passage."
DEMO_PASSAGE = "Anna keeps her grey umbrella in the hall. On rainy days she walks to the office with it."
DEMO = (f"{INSTRUCTION}\n\nPassage: {DEMO_PASSAGE}\nQuestion: Where does Anna keep her umbrella?", "in the hall")
SCORERS = (
    {"name": "grounded", "mode": "span", "source_key": "passage", "max_words": 4, "weight": 1.0},
    {"name": "majority_vote", "extractor": "stripped", "weight": 0.5},
)
MAX_TOKENS = 24
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def draw(rng: random.Random) -> dict[str, Any]:
    pronoun = rng.choice(("she", "he"))
    values = {"name": rng.choice(NAMES), "color": rng.choice(COLORS), "vehicle": rng.choice(VEHICLES),
              "place": rng.choice(PLACES), "goods": rng.choice(GOODS), "day": rng.choice(DAYS),
              "pet": rng.choice(PETS), "pet_name": rng.choice(PET_NAMES), "p": pronoun,
              "q": "her" if pronoun == "she" else "him"}
    passage = rng.choice(PASSAGES).format(**values)
    question, slot = rng.choice(QUESTIONS)
    question = question.format(**values)
    return {"messages": messages(passage, question), "passage": passage, "question": question,
            "answer": values[slot]}


def messages(passage: str, question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": DEMO[0]}, {"role": "assistant", "content": DEMO[1]},
            {"role": "user", "content": f"{INSTRUCTION}\n\nPassage: {passage}\nQuestion: {question}"}]


def generate(seed: int = 0, sizes: dict[str, int] | None = None) -> Splits:
    return draw_splits(draw, lambda r: r["passage"] + "|" + r["question"], "passage_qa", seed, sizes)


def normalize(text: str) -> str:
    flat = re.sub(r"[^\w\s]", " ", text.casefold())
    return " ".join(_ARTICLES.sub(" ", flat).split())


def is_correct(reply: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    return bool(reply.strip()) and normalize(reply) == normalize(str(gold["answer"]))


def gold_completion(gold: Mapping[str, Any]) -> str:
    return str(gold["answer"])
