"""Build a configuration dataclass from a mapping (a TOML table, a JSON body): unknown keys and missing required
keys are errors that name them, so a typo never passes silently as a default."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {names}")
    missing = [
        f.name for f in fields
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{cls.__name__}: missing required key(s) {missing}")
    return cls(**dict(d))
