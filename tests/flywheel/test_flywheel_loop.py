"""`tao-engine flywheel` against a running InferenceServer: it waits until N prompts arrived over HTTP, trains one
round on them, has the server reload the round's model (POST /admin/reload with the API key), and later requests
are logged with model version 2."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tao_engine.cli import main
from tao_engine.flywheel import FlywheelConfig, read_rounds
from tao_engine.flywheel.reload_client import ReloadError, request_reload
from tao_engine.serve import InferenceTable
from tests.flywheel.conftest import API_KEY, tao_table, write_toml


def _ask(server, text: str) -> str:
    response = httpx.post(
        f"{server.url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30,
        json={"model": server.served_model_name, "messages": [{"role": "user", "content": text}], "max_tokens": 3},
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _row(table_path: Path, request_id: str):
    with InferenceTable(table_path) as table:
        return table.get(request_id)


def test_flywheel_triggers_at_n_prompts_and_reloads_the_server(start_server, model_dir, tmp_path, capsys):
    server = start_server()
    table_path = tmp_path / "infer.sqlite"
    toml = write_toml(tao_table(model_dir, tmp_path / "rounds", steps=2), tmp_path / "tao.toml")
    first = [_ask(server, text) for text in ("one", "two")]
    first.append(_ask(server, "one"))  # a repeat: still two distinct prompts
    exit_codes: list[int] = []
    loop = threading.Thread(target=lambda: exit_codes.append(main([
        "flywheel", "--table", str(table_path), "--config", str(toml), "--every", "3", "--poll-s", "0.05",
        "--max-rounds", "1", "--reload-url", server.url, "--api-key", API_KEY, "--quiet",
    ])))
    loop.start()
    time.sleep(1.0)  # many polls: 2 distinct prompts < 3, no round yet
    assert not (tmp_path / "rounds").exists() and loop.is_alive()
    first.append(_ask(server, "three"))
    loop.join(timeout=120)
    assert not loop.is_alive() and exit_codes == [0]

    (record,) = read_rounds(tmp_path / "rounds")
    assert record.num_prompts == 3 and record.round_id == "round-1"
    assert sorted(record.rows_used) == sorted(_row(table_path, rid).id for rid in first)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["served_model_version"] == 2 and line["model_dir"] == record.model_dir
    with InferenceTable(table_path) as table:
        assert table.model_versions()[-1][:2] == (2, record.model_dir)
    later = _row(table_path, _ask(server, "after the reload"))
    assert later.model_version == 2 and later.used_in_round is None
    assert all(_row(table_path, rid).model_version == 1 for rid in first)


def test_reload_errors_are_clear(start_server, tmp_path):
    server = start_server()
    with pytest.raises(ReloadError, match="401"):
        request_reload(server.url, tmp_path, api_key="wrong")
    with pytest.raises(ReloadError, match="400.*reload failed"):
        request_reload(server.url, tmp_path / "no-such-model", api_key=API_KEY)
    with pytest.raises(ReloadError, match="is `tao-engine serve` running"):
        request_reload("http://127.0.0.1:9", tmp_path, timeout_s=5)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("every", 0, "every must be an int >= 1"),
    ("poll_s", 0, "poll_s must be a number > 0"),
    ("max_rounds", 0, "max_rounds must be an int >= 1"),
    ("reload_url", "127.0.0.1:8000", "must start with http"),
])
def test_flywheel_config_is_validated(field, value, match):
    with pytest.raises(ValueError, match=match):
        FlywheelConfig(table="infer.sqlite", **{field: value})
