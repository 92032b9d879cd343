"""Extraction: a sentence about a person -> a JSON object with the person's name, age and current city.

Measured on SmolLM2-135M-Instruct before choosing it (40 generated items, the prompt below, no demonstration):
greedy strict accuracy 0.075, pass@16 at T 0.7 0.425, maj@16 0.275; the content is right in half of the greedy
replies (a JSON object somewhere in the reply holds the right fields: 0.5) but the model writes "JSON:" before it,
pretty-prints it or adds a second object. The task is the user's: their parser wants the object alone.

correct: the whole reply (optionally in one ```json fence) parses as an object with exactly the keys name, age,
city, and each equals the gold (name and city case-insensitive, age as an integer).
label-free reward: the reply is exactly such an object with the right types ("json_schema" on the whole reply),
every value occurs in the text ("grounded"), and agreement with the group on the extracted object
("majority_vote" over the canonical JSON). A distractor city (where the person came from) makes grounding alone
insufficient: agreement and the wording decide between the two cities.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from typing import Any

from bench.quality.splits import Splits, draw_splits

FIRST = ("Lena", "Tom", "Priya", "Omar", "Sofia", "Kenji", "Amara", "Lucas", "Ines", "Ravi", "Elsa", "Diego", "Hana",
         "Noah", "Zara", "Theo", "Mira", "Jonas", "Aisha", "Pablo", "Greta", "Yusuf", "Clara", "Ivan")
LAST = ("Ortiz", "Becker", "Nair", "Haddad", "Rossi", "Sato", "Okafor", "Meyer", "Duarte", "Patel", "Lund", "Ramos",
        "Kim", "Clarke", "Malik", "Novak", "Fischer", "Moreau", "Silva", "Kowalski")
CITIES = ("Denver", "Lisbon", "Porto", "Oslo", "Austin", "Dublin", "Lyon", "Osaka", "Perth", "Quito", "Zagreb",
          "Turin", "Leeds", "Bergen", "Tucson", "Malaga", "Graz", "Cork", "Ghent", "Nantes")
JOBS = ("nurse", "teacher", "chef", "pilot", "engineer", "baker", "lawyer", "architect", "farmer", "librarian",
        "dentist", "plumber", "painter", "pharmacist")
TEMPLATES = (
    "{name}, {age}, grew up in {origin} but now lives in {city}, where {p} works as a {job}.",
    "After ten years in {origin}, the {job} {name} ({age}) moved to {city} last spring.",
    "{name} is a {age}-year-old {job} from {origin}. These days {p} lives in {city}.",
    "Born in {origin}, {name} now works as a {job} in {city}. {P} turned {age} this year.",
    "The {job} {name} left {origin} for {city} in 2019; {p} is {age} years old.",
    "{name} ({age}) is a {job} who lives in {city} and often visits family in {origin}.",
    "Now living in {city}, {name} spent {q} childhood in {origin}. The {age}-year-old works as a {job}.",
    "{name}, a {job} aged {age}, swapped {origin} for a flat in {city}.",
)
INSTRUCTION = ('Extract the person\'s full name, age and the city where they live now from the text below. Reply '
               'with only a JSON object with the keys "name", "age" (a number) and "city".\n\nText: ')
SCHEMA = {"type": "object", "required": ["name", "age", "city"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}}}
SCORERS = (
    {"name": "json_schema", "label": "schema", "extract": "stripped", "schema": SCHEMA, "weight": 1.0},
    {"name": "grounded", "mode": "json_values", "source_key": "source", "extract": "json", "weight": 1.0},
    {"name": "majority_vote", "extractor": "json_canonical", "weight": 0.5},
)
MAX_TOKENS = 48
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def draw(rng: random.Random) -> dict[str, Any]:
    origin, city = rng.sample(CITIES, 2)
    pronoun = rng.choice(("she", "he"))
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    age = rng.randint(19, 78)
    text = rng.choice(TEMPLATES).format(name=name, age=age, origin=origin, city=city, job=rng.choice(JOBS),
                                        p=pronoun, P=pronoun.capitalize(), q="her" if pronoun == "she" else "his")
    return {"messages": [{"role": "user", "content": INSTRUCTION + text}], "source": text,
            "answer": {"name": name, "age": age, "city": city}}


def generate(seed: int = 0, sizes: dict[str, int] | None = None) -> Splits:
    return draw_splits(draw, lambda r: r["source"], "extract", seed, sizes)


def parse_reply(reply: str) -> Any:
    """The reply as JSON when the whole of it (or of its one ```json fence) is JSON; None otherwise."""
    text = reply.strip()
    fenced = _FENCE.fullmatch(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def is_correct(reply: str, gold: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    value = parse_reply(reply)
    answer = gold["answer"]
    if not isinstance(value, dict) or set(value) != {"name", "age", "city"}:
        return False
    age = value["age"]
    if isinstance(age, bool) or not isinstance(age, (int, str)) or not str(age).strip().isdigit():
        return False
    return (int(age) == answer["age"] and str(value["name"]).strip().casefold() == answer["name"].casefold()
            and str(value["city"]).strip().casefold() == answer["city"].casefold())


def gold_completion(gold: Mapping[str, Any]) -> str:
    return json.dumps(gold["answer"])
