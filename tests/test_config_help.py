"""The configuration can be discovered (issue 23 item 4): `tune --help-config` lists every section and field of
TAOConfig, each with its type, default and meaning, generated from the dataclasses; `init-config` writes a commented
TOML per task kind that loads and builds its scorers; LoRA gets its own default learning rate."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest
import torch
from torch import nn

from tao_engine.cli import main
from tao_engine.config_docs import field_docs
from tao_engine.rl.config_help import NESTED, help_config
from tao_engine.rl.exploration.tasks import TaskConfig
from tao_engine.rl.lora import LoraConfig, apply_lora
from tao_engine.rl.optim import FULL_FINETUNE_LR, LORA_LR, OptimConfig, build_optimizer
from tao_engine.rl.starter_config import KINDS, starter_toml
from tao_engine.rl.tao_config import _SECTIONS, TAOConfig
from tao_engine.scoring.registry import build_composite
from tests import helpers

SECTION_CLASSES = [*_SECTIONS.values(), TaskConfig, *(cls for entries in NESTED.values() for _, cls, _ in entries)]


@pytest.mark.parametrize("cls", SECTION_CLASSES, ids=lambda c: c.__name__)
def test_every_field_of_every_section_says_what_it_means(cls):
    undocumented = [doc.name for doc in field_docs(cls) if not doc.meaning]
    assert not undocumented, f"{cls.__name__}: add a comment saying what {undocumented} mean"


def test_help_config_lists_every_section_and_field_with_type_default_and_meaning(capsys):
    assert main(["tune", "--help-config"]) == 0
    text = capsys.readouterr().out
    assert text == help_config()
    for section in (*_SECTIONS, "tasks.<name>", "exploration.transform"):
        assert f"\n[{section}]  " in text or f"\n[[{section}]]  " in text, section
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"\n  {f.name} = " in text, (name, f.name)
    assert "  lr = (unset)    (float | None)\n      None: 2e-4 when the model has LoRA adapters" in text
    assert '  evaluator = "numeric"    (str)' in text and '  chat_template = true    (bool)' in text


@pytest.mark.parametrize("kind", KINDS)
def test_init_config_writes_a_commented_file_that_loads(kind, tmp_path, capsys):
    out = tmp_path / "tao.toml"
    assert main(["init-config", "--kind", kind, "--output", str(out), "--prompts", "mine.jsonl"]) == 0
    text = out.read_text()
    config = TAOConfig.from_toml(out)
    assert config.data.prompts == "mine.jsonl" and config.lora is not None and config.optim.lr is None
    table = tomllib.loads(text)
    meanings = {doc.name: doc.meaning for doc in field_docs(type(config.run))}
    for key in table["run"]:  # each value is preceded by its field's meaning
        assert meanings[key].split()[0] in text.split(f"\n{key} = ")[0].rsplit("\n[", 1)[-1]
    assert build_composite(table["scoring"]["scorers"])  # every scorer it names builds as written
    assert main(["init-config", "--kind", kind, "--output", str(out)]) == 2  # an existing file is not replaced
    assert "exists" in capsys.readouterr().err
    assert out.read_text() == text == starter_toml(kind, "mine.jsonl")


def test_lora_and_full_fine_tuning_get_their_own_default_learning_rate():
    model = helpers.tiny_model(seed=0)
    assert build_optimizer(model, OptimConfig()).param_groups[0]["lr"] == FULL_FINETUNE_LR
    apply_lora(model, LoraConfig(r=4), generator=torch.Generator().manual_seed(0))
    assert build_optimizer(model, OptimConfig()).param_groups[0]["lr"] == LORA_LR
    assert build_optimizer(model, OptimConfig(lr=3e-3)).param_groups[0]["lr"] == 3e-3
    plain = nn.Linear(2, 2)
    assert build_optimizer(plain.named_parameters(), OptimConfig()).param_groups[0]["lr"] == FULL_FINETUNE_LR
