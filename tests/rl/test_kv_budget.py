"""The engine of a TAO run holds the KV cache one step's batch needs, not the engine's all-purpose default (issue 23
item 8: 2 GiB allocated and touched on CPU, four times SmolLM2's weights); a budget the user sets is kept."""

from __future__ import annotations

import dataclasses

from tao_engine.engine.kv_allocation import kv_cache_bytes_per_block
from tao_engine.rl.kv_budget import prompt_lengths, sized_engine_config, step_kv_blocks
from tao_engine.rl.prompt_data import as_user_turns, load_prompts
from tao_engine.rl.tao import TAO
from tao_engine.rl.tao_config import TAOConfig
from tests.run_fixtures import tiny_model_dir, tune_table, write_jsonl


def test_a_step_holds_each_prompt_once_and_every_candidate():
    config = TAOConfig.from_dict({"data": {"prompts_per_step": 8}, "sampling": {"n": 8, "max_tokens": 128}})
    # per prompt: ceil(180 / 16) = 12 prompt blocks shared by its 8 candidates, each 128 / 16 + 1 blocks
    assert step_kv_blocks(config, 180, 16) == 8 * (12 + 8 * 9) + 1
    explored = TAOConfig.from_dict({**config.to_dict(), "exploration": {"strategy": "reason"}})
    assert step_kv_blocks(explored, 180, 16) > step_kv_blocks(config, 180, 16)  # the template and the reasoning


def test_a_run_sizes_its_engine_for_its_step_unless_the_user_set_a_budget(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "m")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say something long enough."}, {"prompt": "Hi"}])
    table = tune_table(model_dir, prompts, tmp_path / "run", steps=1)
    table["engine"].pop("kv_cache_bytes")
    table["probe"] = {"before_tune": False}
    config = TAOConfig.from_dict(table)
    tao = TAO(config, progress=False)
    tao.run()
    records = as_user_turns(load_prompts(prompts), tao.tokenizer, True)
    expected = step_kv_blocks(config, max(prompt_lengths(records, tao.tokenizer)), config.engine.block_size)
    assert tao.engine.block_manager.num_blocks == expected
    per_block = kv_cache_bytes_per_block(tao.model.config, config.engine.block_size, next(tao.model.parameters()).dtype)
    assert expected < 2 * 2**30 // per_block  # far below the CPU default the engine takes alone
    chosen = dataclasses.replace(config.engine, kv_cache_bytes=4 * 2**20)
    assert sized_engine_config(dataclasses.replace(config, engine=chosen), tao.model, [10, 20]) is chosen
