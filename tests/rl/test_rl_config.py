"""Configuration of RL runs: algorithm presets and overrides, the TAO config from TOML and flags, prompt files and
the resumable prompt cursor. Bad input names the field."""

from __future__ import annotations

import json

import pytest

from tao_engine.rl.algorithms import ALGORITHMS, AlgorithmConfig
from tao_engine.rl.prompt_data import PromptCursor, contexts_by_key, load_prompts
from tao_engine.rl.tao_config import TAOConfig, apply_overrides, parse_value, split_overrides


@pytest.mark.parametrize("name", ALGORITHMS)
def test_every_algorithm_has_a_complete_valid_preset(name):
    cfg = AlgorithmConfig(name=name)
    for key in ("advantage", "loss_agg", "ratio_level", "clip_low", "clip_high", "epochs", "num_minibatches"):
        assert getattr(cfg, key) is not None, key


def test_presets_follow_the_papers_and_explicit_fields_win():
    assert AlgorithmConfig(name="dapo").clip_high == 0.28 and AlgorithmConfig(name="dapo").dynamic_sampling
    assert AlgorithmConfig(name="dr_grpo").advantage == "mean"
    assert AlgorithmConfig(name="dr_grpo").loss_agg == "seq_mean_token_sum_norm"
    assert AlgorithmConfig(name="gspo").ratio_level == "sequence"
    assert AlgorithmConfig(name="rloo").advantage == "leave_one_out"
    assert AlgorithmConfig(name="reinforce_pp").advantage == "mean_batch_std"
    assert AlgorithmConfig(name="ppo").epochs > 1
    assert AlgorithmConfig(name="dapo", clip_high=0.3, dynamic_sampling=False).clip_high == 0.3
    assert not AlgorithmConfig(name="dapo", dynamic_sampling=False).dynamic_sampling
    assert AlgorithmConfig(name="dpo").needs_reference and not AlgorithmConfig().needs_reference
    assert AlgorithmConfig(kl_coef=0.01).needs_reference


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "grpo2"}, "name"),
        ({"advantage": "median"}, "advantage"),
        ({"loss_agg": "sum"}, "loss_agg"),
        ({"clip_low": 1.5}, "clip_low"),
        ({"dual_clip": 0.5}, "dual_clip"),
        ({"epochs": 0}, "epochs"),
        ({"kl_type": "k4"}, "kl_type"),
        ({"kl_in_reward": True}, "kl_in_reward"),
        ({"tis_cap": 0.5}, "tis_cap"),
    ],
)
def test_bad_algorithm_fields_are_named(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AlgorithmConfig(**kwargs)


def test_unknown_algorithm_key_is_an_error():
    with pytest.raises(ValueError, match="unknown key"):
        AlgorithmConfig.from_dict({"name": "grpo", "clip": 0.2})


def test_tao_config_from_toml_with_flag_overrides(tmp_path):
    path = tmp_path / "tao.toml"
    path.write_text(
        """
[model]
path = "smollm2"
[data]
prompts = "p.jsonl"
prompts_per_step = 4
[sampling]
n = 4
temperature = 0.9
max_tokens = 32
stop = ["\\n\\n"]
[[scoring.scorers]]
name = "length"
max_chars = 200
[algorithm]
name = "dapo"
[lora]
r = 4
target_modules = ["q_proj", "v_proj"]
[run]
steps = 3
"""
    )
    cfg = TAOConfig.from_toml(path, ["optim.lr=3e-5", "sampling.n=8", "algorithm.clip_high=0.3", "run.output_dir=x"])
    assert cfg.sampling.n == 8 and cfg.sampling.stop == ("\n\n",) and cfg.sampling.temperature == 0.9
    assert cfg.optim.lr == 3e-5 and cfg.algorithm.name == "dapo" and cfg.algorithm.clip_high == 0.3
    assert cfg.lora is not None and cfg.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.scoring.scorers[0]["name"] == "length" and cfg.run.output_dir == "x"
    # to_dict round-trips through JSON (checkpoints store it)
    again = TAOConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"modle": {}}, "unknown section"),
        ({"optim": {"learning_rate": 1e-5}}, r"\[optim\].*unknown key"),
        ({"sampling": {"n": 0}}, r"\[sampling\].*n must be >= 1"),
        ({"run": {"steps": -1}}, "steps"),
        ({"model": "smollm2"}, "must be a table"),
    ],
)
def test_bad_tao_config_names_the_section_and_field(table, match):
    with pytest.raises(ValueError, match=match):
        TAOConfig.from_dict(table)


def test_overrides_and_flag_values():
    assert parse_value("1e-5") == 1e-5 and parse_value("true") is True and parse_value("dapo") == "dapo"
    assert parse_value('["a", "b"]') == ["a", "b"]
    assert split_overrides(["--optim.lr", "1e-5", "--algorithm.name=dapo"]) == ["optim.lr=1e-5", "algorithm.name=dapo"]
    with pytest.raises(ValueError, match="section.field"):
        split_overrides(["--steps", "3"])
    with pytest.raises(ValueError, match="needs a value"):
        split_overrides(["--run.steps"])
    with pytest.raises(ValueError, match="unknown section"):
        apply_overrides({}, ["training.lr=1"])


def test_prompt_files_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "What is 2+2?", "answer": "4"}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "hi"}], "db_path": "x.db"}) + "\n"
    )
    records = load_prompts(jsonl, system_prompt="Be brief.")
    assert records[0].prompt[0] == {"role": "system", "content": "Be brief."}
    assert records[0].prompt[1] == {"role": "user", "content": "What is 2+2?"}
    assert records[0].context == {"answer": "4"} and records[1].context == {"db_path": "x.db"}
    assert contexts_by_key(records) == {"answer": ["4", None], "db_path": [None, "x.db"]}
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("prompt,answer\nWhat is 3+3?,6\n")
    (record,) = load_prompts(csv_path)
    assert record.prompt == "What is 3+3?" and record.context == {"answer": "6"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json\n", r"p.jsonl:1: not valid JSON"),
        ('{"text": "x"}\n', r"p.jsonl:1: give exactly one of"),
        ('{"prompt": "x", "messages": []}\n', "exactly one"),
        ('{"messages": [{"role": "user"}]}\n', "'messages' must be"),
        ("", "holds no prompts"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path, text, match):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_prompts(path)


def test_prompt_cursor_covers_every_prompt_each_pass_and_resumes_exactly():
    cursor = PromptCursor(7, seed=3)
    first = cursor.take(7)
    assert sorted(first) == list(range(7))
    a = cursor.take(3)
    state = cursor.state()
    rest = cursor.take(9)
    resumed = PromptCursor(7, seed=3)
    resumed.load_state(state)
    assert resumed.take(9) == rest
    assert sorted(a + rest[:4]) == list(range(7))  # the second pass is a permutation too
    with pytest.raises(ValueError, match="same prompts file and seed"):
        PromptCursor(8, seed=3).load_state(state)


def test_every_public_name_of_tao_engine_rl_is_what_it_says_after_all_submodules_load():
    # A submodule named like the function it exports would replace that function on the package once imported.
    import importlib
    import inspect
    import pkgutil

    import tao_engine.rl as rl

    for module in pkgutil.iter_modules(rl.__path__, "tao_engine.rl."):  # every submodule that binds a name on rl
        importlib.import_module(module.name)
    for name in rl.__all__:
        assert not inspect.ismodule(getattr(rl, name)), f"tao_engine.rl.{name} is a module, not the exported object"
