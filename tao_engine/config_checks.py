"""Checks that configuration dataclasses share, each with the message that names the field and what it accepts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def check_positive_ints(config: Any, names: Iterable[str]) -> None:
    """ValueError naming `Class.field` for the first of `names` that is not an int >= 1 (True is no count here)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be an int >= 1, got {value!r}")
