"""A tuning round trains each table prompt as the server rendered it (issue 23 item 1): a /v1/completions prompt
raw, as OpenAI's completions API sends it, whatever [data] chat_template says; a chat through the template."""

from __future__ import annotations

import dataclasses

from tao_engine.flywheel import round_from_table
from tao_engine.serve import InferenceRecord, InferenceTable
from tests.flywheel.flywheel_scorers import TargetTokenScorer, composite


def test_a_round_keeps_completion_prompts_raw_and_renders_chats(tao_config, tmp_path):
    table_path = tmp_path / "infer.sqlite"
    with InferenceTable(table_path) as table:
        version = table.register_model_version("m")
        table.insert_many([
            InferenceRecord(request_id=f"r{i}", created_at=0.0, model_version=version, kind=kind, prompt=prompt,
                            sampling={}, outputs=["x"], finish_reasons=["stop"], prompt_tokens=3, completion_tokens=1,
                            latency_s=0.01)
            for i, (kind, prompt) in enumerate([("completion", "Once upon a time"),
                                                ("chat", [{"role": "user", "content": "Say hi"}])])
        ])
    assert tao_config.data.chat_template  # the default: a prompts file's plain text would become a user turn
    config = dataclasses.replace(tao_config, run=dataclasses.replace(tao_config.run, steps=1))
    scorer = TargetTokenScorer()
    round_from_table(table_path, config, scorer=composite(scorer))
    seen = set(scorer.prompts_seen)
    assert "Once upon a time" in seen  # sent raw, as the server did
    assert any(p.endswith("<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n") for p in seen)
