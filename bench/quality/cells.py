"""The benchmark's unit of work and of resume: one cell = (task, method, n, seed). Each finished cell is a JSON file
under `<work_dir>/<profile>/cells/`, written atomically the moment it finishes; a later run skips the cells whose
file exists, so an interrupted run continues where it stopped and the 90-minute benchmark can be run in pieces."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.quality.evaluation import evaluate_accuracy, greedy_tokens_per_second
from bench.quality.exploration import EXPLORATION_METHODS, exploration_config
from bench.quality.profiles import Profile
from bench.quality.records import Example, LabelFreeScorer
from bench.quality.sft import run_sft
from bench.quality.tao_method import run_tao
from bench.quality.tasks import Task
from tao_engine.engine import Engine, EngineConfig
from tao_engine.scoring.registry import build_composite

# () -> (a fresh base model, its tokenizer)
ModelFactory = Callable[[], tuple[Any, Any]]


@dataclass(frozen=True)
class Cell:
    task: str
    method: str  # base | sft | tao | tao_judge | tao_reason | tao_mixed | speed
    n: int  # samples per prompt (1 for base, sft and speed)
    seed: int

    @property
    def key(self) -> str:
        return f"{self.task}-{self.method}-n{self.n}-seed{self.seed}"


def plan_cells(profile: Profile, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    """Cheap cells first; base and speed once per task (greedy decoding does not depend on the seed); speed last,
    after the TAO cell whose adapter it serves."""
    cells: list[Cell] = []
    for task in tasks:
        if "base" in methods:
            cells.append(Cell(task, "base", 1, seeds[0]))
        for seed in seeds:
            if "sft" in methods:
                cells.append(Cell(task, "sft", 1, seed))
            if "tao" in methods:
                cells.extend(Cell(task, "tao", n, seed) for n in sorted(profile.samples))
            if "tao_judge" in methods:
                cells.append(Cell(task, "tao_judge", profile.judge_n, seed))
            cells.extend(Cell(task, m, profile.rules_n, seed) for m in EXPLORATION_METHODS if m in methods)
        if "speed" in methods:
            cells.append(Cell(task, "speed", 1, seeds[0]))
    return cells


def cell_path(work_dir: Path, cell: Cell) -> Path:
    return work_dir / "cells" / f"{cell.key}.json"


def load_finished(work_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((work_dir / "cells").glob("*.json"))]


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=float)
    os.replace(tmp, path)


TUNED_FOR_SPEED = ("tao", *EXPLORATION_METHODS)  # the first seed's adapters at n = rules_n that the speed cell serves


def adapter_dir(work_dir: Path, task: str, profile: Profile, method: str = "tao") -> Path:
    return work_dir / "adapters" / f"{task}-{method}-n{profile.rules_n}-seed0"


def run_cell(cell: Cell, task: Task, train: Sequence[Example], test: Sequence[Example], profile: Profile,
             load_model: ModelFactory, work_dir: Path, first_seed: int) -> dict[str, Any]:
    """Run one cell on a fresh base model; returns its result record (also what the JSON file holds)."""
    start = time.perf_counter()
    model, tokenizer = load_model()
    run_dir = str(work_dir / "runs" / cell.key)
    max_tokens = profile.max_tokens[cell.task]
    if cell.method == "base":
        engine = Engine(model, EngineConfig(kv_cache_bytes=profile.kv_cache_bytes, max_num_seqs=128), tokenizer)
        final = evaluate_accuracy(engine, task, test, max_tokens)
        out: dict[str, Any] = {"eval": final, "curve": [{"step": 0, "accuracy": final["accuracy"]}], "train_s": 0.0}
    elif cell.method == "sft":
        scorer = LabelFreeScorer(build_composite(list(task.rule_scorers)))  # required by TAO's constructor; unused
        out = run_sft(model, tokenizer, task, train, test, profile, cell.seed, run_dir, scorer)
    elif cell.method in ("tao", "tao_judge", *EXPLORATION_METHODS):
        keep = cell.method in TUNED_FOR_SPEED and cell.n == profile.rules_n and cell.seed == first_seed
        exploration = (exploration_config(cell.task, cell.method, profile, cell.n)
                       if cell.method in EXPLORATION_METHODS else None)
        out = run_tao(model, tokenizer, task, train, test, profile, cell.n, cell.seed, run_dir,
                      judge=cell.method == "tao_judge", curve=cell.method != "tao" or cell.n == profile.rules_n,
                      adapter_dir=str(adapter_dir(work_dir, cell.task, profile, cell.method)) if keep else None,
                      exploration=exploration)
        if exploration is not None:
            out["exploration"] = dataclasses.asdict(exploration)
    elif cell.method == "speed":
        adapters = {m: adapter_dir(work_dir, cell.task, profile, m) for m in TUNED_FOR_SPEED}
        out = measure_speed(model, tokenizer, test, profile, load_model, adapters)
    else:
        raise ValueError(f"unknown method {cell.method!r}")
    return {"task": cell.task, "method": cell.method, "n": cell.n, "seed": cell.seed, "profile": profile.name,
            "steps": 0 if cell.method in ("base", "speed") else profile.steps,
            "prompts_per_step": profile.prompts_per_step, "cell_s": time.perf_counter() - start, **out}


def merged_tuned_model(load_model: ModelFactory, adapter: Path) -> Any:
    """A plain model of the base architecture with the adapter's LoRA folded in, as TAO saves a tuned model."""
    from tao_engine.rl.lora import merge_lora
    from tao_engine.rl.lora_adapter import load_lora_adapter

    tuned_with_lora, _ = load_model()
    load_lora_adapter(tuned_with_lora, adapter)
    merged_state = merge_lora(tuned_with_lora).state_dict()  # plain HF names: the adapters are folded in
    tuned, _ = load_model()
    tuned.load_state_dict(merged_state)
    return tuned


def measure_speed(model: Any, tokenizer: Any, test: Sequence[Example], profile: Profile, load_model: ModelFactory,
                  adapters: Mapping[str, Path]) -> dict[str, Any]:
    """Greedy tokens/s of the base model and of each tuned one (method -> adapter dir; "tao" required, the others
    when their cell ran), alternated twice to spread machine noise over all of them. tok_s_tuned / tok_s_ratio are
    the "tao" model's; `tuned` holds every method's."""
    if not (adapters["tao"] / "adapter_config.json").is_file():
        raise FileNotFoundError(f"speed cell: no tuned adapter at {adapters['tao']}; run the 'tao' method first")
    tuned = {m: merged_tuned_model(load_model, path) for m, path in adapters.items()
             if (path / "adapter_config.json").is_file()}
    prompts = [ex.record.prompt for ex in test]
    config = EngineConfig(kv_cache_bytes=profile.kv_cache_bytes, max_num_seqs=128)
    engines = {"base": Engine(model, config, tokenizer)}
    engines.update({m: Engine(t, config, tokenizer) for m, t in tuned.items()})
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(2):
        for name, engine in engines.items():
            rates[name].append(greedy_tokens_per_second(engine, prompts, profile.speed_tokens))
    best = {name: max(r) for name, r in rates.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("base", model), *tuned.items())}
    return {"tok_s_base": best["base"], "tok_s_tuned": best["tao"], "tok_s_ratio": best["tao"] / best["base"],
            "tuned": {m: {"tok_s": best[m], "tok_s_ratio": best[m] / best["base"], "params": params[m]}
                      for m in tuned},
            "rates": rates, "params_base": params["base"], "params_tuned": params["tao"], "train_s": 0.0}
