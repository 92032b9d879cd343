"""`TAOConfig`: everything a tuning run needs, one section per concern, read from TOML (`tao-engine tune --config
tao.toml`) with every field also settable as a flag `--section.field value`.

Sections: model, data, sampling, scoring, algorithm, optim, lora, train, engine, run, exploration, tasks.<name>,
distributed, guards, probe. What each is for and what every field means: `tao-engine tune --help-config`, generated
from these dataclasses (tao_engine/rl/config_help.py).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tao_engine.config_dict import dataclass_from_dict, read_toml
from tao_engine.distributed.config import DistributedSection
from tao_engine.engine.config import EngineConfig
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.evaluators import EVALUATORS
from tao_engine.rl.exploration.config import ExplorationConfig
from tao_engine.rl.exploration.tasks import TaskConfig, tasks_from_dict
from tao_engine.rl.guards.config import GuardsSection
from tao_engine.rl.lora import LoraConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.readiness.config import ProbeSection

# "auto": bf16 where the device computes it natively, else float32 (tao_engine.precision); the trainer keeps fp32
# master weights of bf16 parameters (tao_engine.rl.master_weights).
_DTYPES = ("float32", "bfloat16", "float16", "auto")
EVAL_EXTRACTORS = ("boxed_or_last_number", "last_number", "boxed", "exact")


@dataclass(frozen=True)
class ModelSection:
    path: str = "smollm2"  # an HF model directory, a .gguf file, or "smollm2" (the bundled SmolLM2-135M-Instruct)
    dtype: str = "float32"  # of the weights and the KV cache (float32, bfloat16, float16, ...)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"[model] dtype must be one of {_DTYPES}, got {self.dtype!r}")


@dataclass(frozen=True)
class DataSection:
    # The unlabeled prompts: JSONL ({"prompt": text} or {"messages": [...]} a line; other keys reach the scorers as
    # context, e.g. "db_path") or CSV (a "prompt" column).
    prompts: str = ""
    # Optional labeled probe, for monitoring only: JSONL with an "answer" (or a per-task evaluator's keys) a line,
    # evaluated greedily before and after tuning (see [run] eval_every).
    eval: str | None = None
    system_prompt: str | None = None  # put in front of every prompt as its system turn
    prompts_per_step: int = 8  # prompts drawn per step, each given [sampling] n candidates
    shuffle: bool = True  # draw prompts in a seeded shuffled order (false: file order), pass after pass
    # A prompt that cannot run (too long for prompt + max_tokens, bad token ids): false stops with its file:line when
    # the data loads; true skips it with a count (and drops one that still fails mid-run from its step).
    skip_failed: bool = False
    # A plain {"prompt": text} goes to the model as one user turn of its chat template (what an instruct model
    # expects); false sends the text raw. Chats ("messages") always use the template.
    chat_template: bool = True

    def __post_init__(self) -> None:
        for name in ("skip_failed", "chat_template", "shuffle"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"[data] {name} must be true or false, got {getattr(self, name)!r}")
        if self.prompts_per_step < 1:
            raise ValueError(f"[data] prompts_per_step must be >= 1, got {self.prompts_per_step}")


@dataclass(frozen=True)
class ScoringSection:
    # [[scoring.scorers]] tables: name (a built-in scorer, see `tao-engine scorers`, or "module:function"), weight,
    # label, timeout_s, and the scorer's own keys.
    scorers: tuple[Mapping[str, Any], ...] = ()
    combine: str = "weighted_sum"  # weighted_sum, normalize_then_sum or sum_then_normalize
    # A scorer that raises: "raise" stops the run naming the scorer and the prompt; "none" scores None and counts it.
    on_error: str = "raise"


@dataclass(frozen=True)
class TrainSection:
    loss_temperature: float | None = None  # temperature of the trainer's log-probs; None: the sampling temperature
    shared_prompt: bool = True  # forward each prompt once for its n completions
    # Tokens per micro-batch of the update (a prompt's group is never split); gradients accumulate across them. The
    # update's memory grows with it: see README "Memory" and bench/bench_tune_memory.py.
    max_tokens_per_forward: int = 2048
    # Recompute each layer's activations in the backward, keeping only its input: the update then holds a fraction
    # of its activations (SmolLM2 LoRA, n = 8, 180-token prompts: 3.6 GB peak instead of 5.3) for about a third more
    # compute; false when memory is plentiful and time is not.
    gradient_checkpointing: bool = True
    bf16_autocast: bool = True  # CUDA only: the update's forwards run under bf16 autocast


@dataclass(frozen=True)
class RunSection:
    steps: int = 10  # TAO steps: generate, score, update
    output_dir: str = "runs/tao"  # one run per directory: metrics.jsonl, plots, checkpoints, final/
    checkpoint_every: int = 0  # 0 = only at the end
    keep_last: int = 2  # checkpoints kept; older ones are deleted
    eval_every: int = 0  # 0 = before and after only (when an eval set is given)
    seed: int = 0  # of sampling, prompt order, LoRA initialization and minibatch order
    # How an eval reply is checked against its label: numeric (a number "answer", the reply's read by eval_extractor),
    # exact, normalized (SQuAD's exact match), sql (the line's gold_sql and the reply run on its db_path give the same
    # rows in any order), json_fields (the share of the "answer" object's fields the reply's JSON matches).
    evaluator: str = "numeric"
    # numeric evaluator (and the probe's labeled check): how the number is read from a reply: boxed_or_last_number,
    # last_number, boxed, exact (the whole reply).
    eval_extractor: str = "boxed_or_last_number"
    eval_max_tokens: int | None = None  # None = sampling.max_tokens

    def __post_init__(self) -> None:
        for name in ("steps", "checkpoint_every", "eval_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"[run] {name} must be an integer >= 0, got {value!r}")
        if self.keep_last < 1:
            raise ValueError(f"[run] keep_last must be >= 1, got {self.keep_last}")
        if self.evaluator not in EVALUATORS:
            raise ValueError(f"[run] evaluator must be one of {EVALUATORS}, got {self.evaluator!r}")
        if self.eval_extractor not in EVAL_EXTRACTORS:
            raise ValueError(f"[run] eval_extractor must be one of {EVAL_EXTRACTORS}, got {self.eval_extractor!r}")


_SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "sampling": SamplingParams,
    "scoring": ScoringSection,
    "algorithm": AlgorithmConfig,
    "optim": OptimConfig,
    "lora": LoraConfig,
    "train": TrainSection,
    "engine": EngineConfig,
    "run": RunSection,
    "exploration": ExplorationConfig,
    "distributed": DistributedSection,
    "guards": GuardsSection,
    "probe": ProbeSection,
}


@dataclass(frozen=True)
class TAOConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(n=8, temperature=1.0, max_tokens=64))
    scoring: ScoringSection = field(default_factory=ScoringSection)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # lr: LORA_LR with [lora], FULL_FINETUNE_LR without
    lora: LoraConfig | None = None
    train: TrainSection = field(default_factory=TrainSection)
    engine: EngineConfig = field(default_factory=EngineConfig)
    run: RunSection = field(default_factory=RunSection)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # [tasks.<name>]; empty = a single-task run
    distributed: DistributedSection = field(default_factory=DistributedSection)
    guards: GuardsSection = field(default_factory=GuardsSection)
    probe: ProbeSection = field(default_factory=ProbeSection)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TAOConfig:
        unknown = sorted(set(d) - set(_SECTIONS) - {"tasks"})
        if unknown:
            raise ValueError(f"tao config: unknown section(s) {unknown}; sections are {sorted(_SECTIONS)}")
        kwargs: dict[str, Any] = {}
        for name, section in d.items():
            if name == "tasks":  # a table of tables, one per task
                kwargs["tasks"] = tasks_from_dict(section)
                continue
            if not isinstance(section, Mapping):
                raise ValueError(f"tao config: [{name}] must be a table, got {type(section).__name__}")
            values = dict(section)
            if name == "scoring" and "scorers" in values:
                values["scorers"] = tuple(values["scorers"])
            if name == "sampling":
                values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            try:
                kwargs[name] = dataclass_from_dict(_SECTIONS[name], values)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"tao config [{name}]: {exc}") from exc
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TAOConfig:
        table = read_toml(path)
        try:
            return cls.from_dict(apply_overrides(table, overrides))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(dataclasses.asdict(value))
        if self.tasks:
            out["tasks"] = {name: _plain(dataclasses.asdict(task)) for name, task in self.tasks.items()}
        return out


def split_overrides(extra: Sequence[str]) -> list[str]:
    """`--a.b value` / `--a.b=value` pairs -> ["a.b=value", ...]; anything else is an error naming it."""
    out: list[str] = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            raise ValueError(f"tune: unexpected argument {item!r}; config flags look like --section.field value")
        key = item[2:]
        if "=" in key:
            out.append(key)
            i += 1
            continue
        if i + 1 >= len(extra):
            raise ValueError(f"tune: flag {item} needs a value")
        out.append(f"{key}={extra[i + 1]}")
        i += 2
    return out


def load_tao_config(path: str | None, extra: Sequence[str]) -> TAOConfig:
    """The TAOConfig of `--config path` (or the defaults) with the `--section.field value` flags applied: what
    `tune`, `probe` and `flywheel` read."""
    overrides = split_overrides(extra)
    if path:
        return TAOConfig.from_toml(path, overrides)
    return TAOConfig.from_dict(apply_overrides({}, overrides))


def apply_overrides(table: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`section.field=value` strings (values in TOML syntax; bare words are strings) applied onto a config table."""
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in table.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise ValueError(f"override {item!r}: write section.field=value, e.g. optim.lr=1e-5")
        if section not in _SECTIONS:
            raise ValueError(f"override {item!r}: unknown section {section!r}; sections are {sorted(_SECTIONS)}")
        out.setdefault(section, {})[name] = parse_value(raw)
    return out


def parse_value(raw: str) -> Any:
    """A flag's text as a TOML value (numbers, booleans, arrays, quoted strings); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
