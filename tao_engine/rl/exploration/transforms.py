"""Response transforms: an exploration output (reasoning, a critique-and-revise trace) -> the response the model
should give directly to the inference-time prompt.

Kinds: `identity` (the output, stripped), `final_sql` (the last ```sql block, else a bare SELECT/WITH statement),
`final_number` (the last \\boxed{...}, else the last number), `after_marker` (the text after the marker's last
occurrence, stripped), `regex` (the last match's group 1, or the whole match when the pattern has no group).

A transform that finds nothing returns None. Such a candidate stays in its group (every prompt keeps n slots, which
the group-relative update needs) but gets reward None and an empty completion: it counts as missing in the
advantages (advantage 0), is never a best or worst for SFT/DPO, and trains no token.
"""

from __future__ import annotations

import re

from tao_engine.rl.exploration.config import TransformConfig
from tao_engine.scoring.extract import boxed_or_last_number, sql_block


def apply_transform(text: str, transform: TransformConfig) -> str | None:
    """The direct response in `text`, or None when the transform finds none (empty results count as none)."""
    if not isinstance(text, str):
        raise TypeError(f"apply_transform: text must be a str, got {type(text).__name__}")
    kind = transform.kind
    if kind == "identity":
        found: str | None = text
    elif kind == "final_sql":
        found = sql_block(text)
    elif kind == "final_number":
        found = boxed_or_last_number(text)
    elif kind == "after_marker":
        at = text.rfind(transform.marker)
        found = None if at < 0 else text[at + len(transform.marker):]
    elif kind == "regex":
        assert transform.pattern is not None  # TransformConfig checks it
        matches = list(re.finditer(transform.pattern, text))
        if not matches:
            found = None
        else:
            last = matches[-1]
            found = last.group(1) if last.re.groups else last.group(0)
    else:  # TransformConfig validates kinds; a new kind must be added here
        raise ValueError(f"apply_transform: unknown kind {kind!r}")
    if found is None:
        return None
    found = found.strip()
    return found or None
