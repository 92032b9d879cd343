"""Unlabeled prompts for tuning: read from JSONL or CSV, served in seeded shuffled passes through a cursor that a
checkpoint saves and a resumed run restores exactly.

JSONL: one object per line with "prompt" (text) or "messages" (a chat); every other key is the prompt's context,
handed to the scorers by name (e.g. "db_path" for the SQL verifier, "schema" for JSON Schema). A labeled eval file
may carry "answer". CSV: a "prompt" column, the other columns context. An optional "task" key (column) names the
prompt's task in a multi-task run (`[tasks.<name>]`): it selects scorers and exploration and is not context.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tao_engine.engine.prompts import PromptLike, as_user_turn
from tao_engine.text_lines import json_object_lines


@dataclass(frozen=True)
class PromptRecord:
    prompt: PromptLike  # text or chat messages
    context: dict[str, Any] = field(default_factory=dict)
    task: str | None = None  # multi-task runs: the [tasks.<name>] this prompt belongs to
    source: str | None = field(default=None, compare=False)  # "file:line", for errors that name the prompt


def load_prompts(path: str | Path, system_prompt: str | None = None) -> list[PromptRecord]:
    """Read prompts from a .jsonl or .csv file; `system_prompt` is prepended to every chat (text prompts become a
    user message then). Errors name the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} " + ("is not a file" if path.exists() else "does not exist"))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = list(_read_jsonl(path))
    elif suffix == ".csv":
        records = list(_read_csv(path))
    else:
        raise ValueError(f"prompts file {path}: use .jsonl (one JSON object per line) or .csv (a 'prompt' column)")
    if not records:
        raise ValueError(f"prompts file {path} holds no prompts")
    if system_prompt is not None:
        records = [dataclasses.replace(r, prompt=_with_system(r.prompt, system_prompt)) for r in records]
    return records


def _read_jsonl(path: Path):
    for number, obj in json_object_lines(path, "a JSON object with 'prompt' or 'messages'"):
        yield _record(obj, f"{path}:{number}")


def _read_csv(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None or "prompt" not in reader.fieldnames:
                raise ValueError(f"{path}: the CSV header needs a 'prompt' column, got {reader.fieldnames}")
            for row in reader:
                yield _record(dict(row), f"{path}:{reader.line_num}")
        except (UnicodeDecodeError, csv.Error) as exc:  # a CSV row may span lines: the reader's line, not ours
            raise ValueError(f"{path}:{reader.line_num}: not a readable UTF-8 CSV row ({exc}); save the file as "
                             "UTF-8 CSV") from None


def _record(obj: dict[str, Any], where: str) -> PromptRecord:
    if ("prompt" in obj) == ("messages" in obj):
        raise ValueError(f"{where}: give exactly one of 'prompt' (text) or 'messages' (a chat)")
    prompt = obj.pop("prompt", None)
    if prompt is None:
        prompt = obj.pop("messages")
        if not isinstance(prompt, list) or not prompt or not all(
            isinstance(m, Mapping) and "role" in m and "content" in m for m in prompt
        ):
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
    elif not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: 'prompt' must be a non-empty string")
    task = obj.pop("task", None)
    if task is not None and (not isinstance(task, str) or not task):
        raise ValueError(f"{where}: 'task' must be a non-empty string naming a [tasks.<name>] table, got {task!r}")
    return PromptRecord(prompt, obj, task=task, source=where)


def _with_system(prompt: PromptLike, system: str) -> PromptLike:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if messages and messages[0].get("role") == "system":
        return messages
    return [{"role": "system", "content": system}, *messages]


class PromptCursor:
    """Seeded shuffled passes over N prompts; `state()` / `load_state()` make a resumed run take the same batches."""

    def __init__(self, num_prompts: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_prompts < 1:
            raise ValueError(f"PromptCursor: need at least one prompt, got {num_prompts}")
        self.num_prompts = num_prompts
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_prompts))
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_prompts, generator=gen).tolist()

    def take(self, count: int) -> list[int]:
        """The next `count` prompt indices, crossing into the next shuffled pass when one ends."""
        out: list[int] = []
        while len(out) < count:
            order = self._order(self.epoch)
            need = count - len(out)
            out.extend(order[self.position : self.position + need])
            self.position += need
            if self.position >= self.num_prompts:
                self.epoch += 1
                self.position = 0
        return out

    def seen(self) -> list[int]:
        """The prompt indices handed out so far (all of them once a pass has completed), ascending."""
        return list(range(self.num_prompts)) if self.epoch else sorted(self._order(0)[: self.position])

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "num_prompts": self.num_prompts, "seed": self.seed}

    def load_state(self, state: Mapping[str, int]) -> None:
        if state.get("num_prompts") != self.num_prompts or state.get("seed") != self.seed:
            raise ValueError(
                f"PromptCursor: the checkpoint's cursor is for {state.get('num_prompts')} prompts with seed "
                f"{state.get('seed')}, this run has {self.num_prompts} with seed {self.seed}; resume with the same "
                "prompts file and seed"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def as_user_turns(records: Sequence[PromptRecord], tokenizer: Any, chat_template: bool) -> list[PromptRecord]:
    """Records whose plain-text prompt becomes one user turn for the chat template (tao_engine.engine.prompts
    .as_user_turn); a record that does not change is returned as the same object."""
    out = []
    for record in records:
        prompt = as_user_turn(record.prompt, tokenizer, chat_template)
        out.append(record if prompt is record.prompt else dataclasses.replace(record, prompt=prompt))
    return out


def contexts_by_key(records: Sequence[PromptRecord]) -> dict[str, list[Any]]:
    """Per-prompt context values aligned with `records`, by key (a missing key gives None for that prompt)."""
    keys = sorted({k for r in records for k in r.context})
    return {k: [r.context.get(k) for r in records] for k in keys}


def keep_runnable(records: Sequence[PromptRecord], engine: Any, max_tokens: int, skip: bool,
                  what: str = "prompt") -> tuple[list[PromptRecord], list[str]]:
    """(records that can run on `engine` with `max_tokens`, a message per skipped one). A record that cannot run
    (tao_engine.engine.prompt_fit) is an error naming its file:line, or with `skip` is left out and reported."""
    from tao_engine.engine.prompt_fit import prompt_problem

    kept: list[PromptRecord] = []
    skipped: list[str] = []
    for i, record in enumerate(records):
        problem = prompt_problem(engine, record.prompt, max_tokens)
        if problem is None:
            kept.append(record)
            continue
        where = record.source or f"{what} {i}"
        if not skip:
            raise ValueError(f"{where}: this {what} cannot run: {problem}; or set [data] skip_failed = true to skip "
                             "such prompts")
        skipped.append(f"{where}: {problem}")
    if not kept:
        raise ValueError(f"every {what} was skipped as unable to run; the first: {skipped[0]}")
    return kept, skipped
