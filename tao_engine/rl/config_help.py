"""`tao-engine tune --help-config`: every section of a TAO config and every field in it, with its type, its default
and what it means, generated from the dataclasses (tao_engine.config_docs reads the meanings from their source), so
it lists exactly what `TAOConfig.from_toml` accepts."""

from __future__ import annotations

import textwrap

from tao_engine.config_docs import FieldDoc, field_docs, format_default
from tao_engine.rl.exploration.config import MixedEntry, TransformConfig
from tao_engine.rl.exploration.tasks import TaskConfig
from tao_engine.rl.tao_config import _SECTIONS as SECTIONS
from tao_engine.rl.tao_config import TAOConfig

# What each section is for: the one place it is said (tao_config.py points here).
PURPOSES: dict[str, str] = {
    "model": "the model to tune",
    "data": "the unlabeled prompts, an optional labeled eval file, and how prompts are drawn and rendered",
    "sampling": "how candidates are sampled: n per prompt (the tuning compute budget), temperature, length",
    "scoring": "the label-free reward: scorers (built-in or your functions), how they combine, what a failure does",
    "algorithm": "the RL algorithm (a preset) and any of its settings overridden",
    "optim": "AdamW and the learning-rate schedule",
    "lora": "LoRA adapters; leave the section out to fine-tune every weight",
    "train": "how the update runs: micro-batching, log-prob temperature, memory",
    "engine": "the generation engine: KV cache budget, batching",
    "run": "length, output directory, checkpoints, evaluation, seed",
    "exploration": "how candidates are found while tuning (the tuned model still answers directly)",
    "tasks": "multi-task runs: per task scorers and exploration; each prompt names its task with a \"task\" key",
    "distributed": "read only under torchrun: data-parallel strategy, backend, collective timeout",
    "guards": "the guards label-free RL needs (all off by default), each logged under guard/",
    "probe": "the readiness probe `tune` runs before step 1 (and `tao-engine probe` runs alone)",
}
# Tables inside a section, shown after it: (heading, dataclass, purpose).
NESTED: dict[str, list[tuple[str, type, str]]] = {
    "exploration": [("[exploration.transform]", TransformConfig, "how an exploration output becomes the answer "
                     "trained on (or a kind name: transform = \"final_number\")"),
                    ("[[exploration.mixed]]", MixedEntry, "mixed: one table per strategy entry")],
}
WIDTH = 118


def help_config() -> str:
    defaults = TAOConfig()
    lines = [
        "TAO configuration (tao-engine tune --config FILE). Every field is also a flag: --section.field VALUE (TOML",
        "syntax; bare words are strings). A section or field left out keeps its default. `tao-engine init-config",
        "--kind math|sql|json|text` writes a commented starting file; `tao-engine scorers` lists the scorers.",
    ]
    for name, cls in SECTIONS.items():
        instance = getattr(defaults, name)
        if instance is None:  # [lora]: absent by default; show what the section gives once written
            instance = cls()
        lines += _section(f"[{name}]", PURPOSES[name], field_docs(cls, instance))
        for heading, nested, purpose in NESTED.get(name, []):
            lines += _section(heading, purpose, field_docs(nested))
        if name == "exploration":
            lines += _section("[tasks.<name>]", PURPOSES["tasks"], field_docs(TaskConfig))
    return "\n".join(lines) + "\n"


def _section(heading: str, purpose: str, docs: list[FieldDoc]) -> list[str]:
    out = ["", f"{heading}  {purpose}"]
    for doc in docs:
        out.append(f"  {doc.name} = {format_default(doc.default)}    ({doc.type})")
        if doc.meaning:
            out += textwrap.wrap(doc.meaning, WIDTH, initial_indent="      ", subsequent_indent="      ")
    return out
