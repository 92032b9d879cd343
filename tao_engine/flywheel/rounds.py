"""One flywheel round: train on the prompts the inference table collected since the last round.

    record = round_from_table("infer.sqlite", TAOConfig.from_toml("tao.toml"))
    record.model_dir     # <run.output_dir>/round-<k>/final, the tuned model to serve next

A round (1) takes the prompts whose content hash no earlier round used (one row per hash, oldest first), (2) runs
TAO on them for `run.steps` steps, starting from the previous round's model (the config's model for the first),
into a temporary directory that is renamed to `<run.output_dir>/round-<k>` only when training finished, (3) marks
the hashes of the prompts its steps drew as used (every row carrying one gets `used_in_round = round-<k>`; prompts
the steps did not reach stay unused for the next round) and (4) appends the round
to `<run.output_dir>/rounds.json`. A round that fails leaves no round directory, no marks and no manifest entry:
its prompts stay available to the next attempt.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from tao_engine.atomic_dir import atomic_directory
from tao_engine.flywheel.manifest import RoundRecord, append_round, read_rounds
from tao_engine.flywheel.table_prompts import records_from_rows
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.serve.inference_table import InferenceTable

_ROUND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class NotEnoughPromptsError(ValueError):
    """The table holds fewer unused prompts than a round asks for."""


def round_from_table(
    table_path: str | Path,
    config: TAOConfig,
    round_id: str | None = None,
    min_prompts: int = 1,
    max_prompts: int | None = None,
    kind: str | None = None,
    model: Any = None,
    tokenizer: Any = None,
    scorer: Any = None,
    progress: bool = False,
) -> RoundRecord:
    """Run one TAO round on the table's unused prompts; returns the round's manifest entry.

    `config.run.output_dir` is the flywheel's root (round directories and rounds.json live there). `max_prompts`
    caps the prompts taken (oldest first; None = all unused), `kind` keeps only 'chat' or 'completion' rows.
    `model`/`tokenizer`/`scorer` objects are handed to TAO as given (library use, tests); without `model` the round
    loads the previous round's model, or `config.model.path` for the first round."""
    if isinstance(min_prompts, bool) or not isinstance(min_prompts, int) or min_prompts < 1:
        raise ValueError(f"round_from_table: min_prompts must be an int >= 1, got {min_prompts!r}")
    if max_prompts is not None and (not isinstance(max_prompts, int) or max_prompts < min_prompts):
        raise ValueError(f"round_from_table: max_prompts must be None or an int >= min_prompts, got {max_prompts!r}")
    if config.run.steps < 1:
        raise ValueError("round_from_table: [run] steps must be >= 1 (a round that trains nothing writes no model)")
    table_path = Path(table_path)
    if not table_path.is_file():
        raise FileNotFoundError(f"inference table {table_path} does not exist; give the file `serve --table` writes")
    root = Path(config.run.output_dir)
    previous = read_rounds(root)
    index = len(previous) + 1
    round_id = f"round-{index}" if round_id is None else round_id
    if not isinstance(round_id, str) or not _ROUND_ID.fullmatch(round_id):
        raise ValueError(f"round_from_table: round_id must be a plain name (letters, digits, ._-), got {round_id!r}")
    if any(r.round_id == round_id for r in previous):
        raise ValueError(f"round_from_table: {root / 'rounds.json'} already has a round {round_id!r}")

    with InferenceTable(table_path) as table:
        rows = table.unused_prompts(limit=max_prompts, kind=kind)
    if len(rows) < min_prompts:
        raise NotEnoughPromptsError(
            f"inference table {table_path}: {len(rows)} unused prompt(s), the round needs at least {min_prompts}; "
            "serve more requests first"
        )
    records = records_from_rows(rows, config.data.system_prompt)

    base_model = previous[-1].model_dir if previous else config.model.path
    run_dir = root / round_id
    started = time.time()
    with atomic_directory(run_dir) as tmp:  # renamed into place only when training finished
        round_config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, path=base_model),
            # A row is trained as the server rendered it: chats by the template, /v1/completions text raw (OpenAI's
            # semantics), so plain text is not turned into a user turn here whatever [data] chat_template says.
            data=dataclasses.replace(config.data, chat_template=False),
            run=dataclasses.replace(config.run, output_dir=str(tmp)),
        )
        from tao_engine.rl.tao import TAO

        tao = TAO(round_config, model=model, tokenizer=tokenizer, scorer=scorer, progress=progress)
        result = tao.run(prompts=records)
        final_name = result.final_model_dir.name
    # Only the prompts the steps drew are used up; the rest (fewer steps than prompts) stay for the next round.
    row_of = {id(record): row for record, row in zip(records, rows, strict=True)}
    trained = [row_of[id(record)] for record in result.used_prompts]

    with InferenceTable(table_path) as table:  # only now: a failed round above leaves every row unused
        table.mark_used([r.prompt_hash for r in trained], round_id)
        used = table.rows_used_in_round(round_id)
    history = result.history
    record = RoundRecord(
        round_id=round_id, index=index, started_at=started, finished_at=time.time(),
        base_model=base_model if model is None else "<in-memory model>",
        model_dir=str((run_dir / final_name).resolve()), steps=result.steps, num_prompts=len(trained), rows_used=used,
        reward_first=history[0].get("reward_mean") if history else None,
        reward_last=history[-1].get("reward_mean") if history else None,
    )
    append_round(root, record)
    return record
