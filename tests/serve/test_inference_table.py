"""The inference table: schema and durability settings, round trip of every field, prompt-hash normalization,
the tuner's queries (unused prompts deduped by hash, mark_used by ids or hashes), feedback, model versions, and the
writer thread: futures resolve only after commit, one bad record fails alone, a killed writer loses no
acknowledged row."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tao_engine.serve import InferenceRecord, InferenceTable, TableWriter, prompt_hash

REPO = Path(__file__).resolve().parents[2]


def _record(i: int, prompt: object = None, kind: str = "completion", version: int = 1, **kw) -> InferenceRecord:
    fields = dict(
        request_id=f"cmpl-{i}", created_at=1000.0 + i, model_version=version, kind=kind,
        prompt=f"prompt {i}" if prompt is None else prompt, sampling={"temperature": 0.5, "stop": ["\n"]},
        outputs=[f"out {i}", "second"], finish_reasons=["stop", "length"], prompt_tokens=3 + i,
        completion_tokens=7, latency_s=0.25, user="u1",
    )
    return InferenceRecord(**{**fields, **kw})


@pytest.fixture
def table(tmp_path: Path):
    with InferenceTable(tmp_path / "t.sqlite") as t:
        t.register_model_version("/models/a")
        yield t


def test_round_trip_keeps_every_field_and_the_file_is_wal_with_full_sync(table: InferenceTable):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo 😀"}]
    row_id = table.insert(_record(1, prompt=chat, kind="chat"))
    row = table.get(row_id)
    assert row is not None and row == table.get("cmpl-1")
    assert (row.id, row.request_id, row.kind, row.prompt, row.model_version) == (row_id, "cmpl-1", "chat", chat, 1)
    assert row.sampling == {"temperature": 0.5, "stop": ["\n"]} and row.outputs == ["out 1", "second"]
    assert row.finish_reasons == ["stop", "length"] and (row.prompt_tokens, row.completion_tokens) == (4, 7)
    assert (row.latency_s, row.user, row.created_at) == (0.25, "u1", 1001.0)
    assert row.prompt_hash == prompt_hash("chat", chat)
    assert (row.feedback, row.feedback_at, row.used_in_round) == (None, None, None)
    assert table._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with sqlite3.connect(table.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):  # model versions are a foreign key
        table.insert(_record(2, version=99))


def test_prompt_hash_ignores_formatting_noise_only():
    base = [{"role": "user", "content": "Café au lait?\nYes please"}]
    noisy = [{"role": "user", "content": "  Cafe\u0301 au lait?  \r\nYes please \n"}]  # NFD, CRLF, trailing spaces
    assert prompt_hash("chat", base) == prompt_hash("chat", noisy)
    assert prompt_hash("chat", base) != prompt_hash("chat", [{"role": "system", "content": base[0]["content"]}])
    assert prompt_hash("chat", base) != prompt_hash("chat", [{"role": "user", "content": "Cafe au lait?"}])
    assert prompt_hash("chat", base) != prompt_hash("completion", base[0]["content"])
    two = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert prompt_hash("chat", two) != prompt_hash("chat", two[::-1])
    assert prompt_hash("completion", [1, 2, 3]) != prompt_hash("completion", [1, 2])
    with pytest.raises(ValueError, match="kind"):
        prompt_hash("embedding", "x")


def test_unused_prompts_dedupe_by_hash_and_rounds_retire_them(table: InferenceTable):
    prompts = ["alpha", "beta", "alpha  ", "gamma", "beta", "delta"]  # "alpha  " normalizes to "alpha"
    ids = [table.insert(_record(i, prompt=p)) for i, p in enumerate(prompts)]
    chat = [{"role": "user", "content": "alpha"}]
    chat_id = table.insert(_record(10, prompt=chat, kind="chat"))
    assert [(u.id, u.prompt, u.times_seen) for u in table.unused_prompts()] == [
        (ids[0], "alpha", 2), (ids[1], "beta", 2), (ids[3], "gamma", 1), (ids[5], "delta", 1), (chat_id, chat, 1)
    ]
    assert [u.id for u in table.unused_prompts(limit=2)] == ids[:2]
    assert [u.id for u in table.unused_prompts(kind="chat")] == [chat_id]
    assert table.count_unused_prompts() == 5 and table.count_unused_prompts(kind="completion") == 4

    assert table.mark_used([ids[0], ids[3]], "round-1") == 2  # by row id: those rows, and their hashes retire
    assert table.rows_used_in_round("round-1") == [ids[0], ids[3]]
    assert [u.id for u in table.unused_prompts()] == [ids[1], ids[5], chat_id]
    late = table.insert(_record(20, prompt="alpha"))  # an old prompt arriving again is not offered again
    assert late not in [u.id for u in table.unused_prompts()] and table.get(late).used_in_round is None

    beta = prompt_hash("completion", "beta")
    assert table.mark_used([beta], "round-2") == 2  # by hash: every row carrying it
    assert table.rows_used_in_round("round-2") == [ids[1], ids[4]]
    assert table.mark_used([ids[1]], "round-3") == 0  # a row keeps its first round
    assert table.get(ids[1]).used_in_round == "round-2"
    assert [u.id for u in table.unused_prompts()] == [ids[5], chat_id]

    with pytest.raises(ValueError, match="no rows with ids"):
        table.mark_used([ids[5], 12345], "round-4")
    assert table.get(ids[5]).used_in_round is None  # nothing was marked
    with pytest.raises(ValueError, match="neither a row id"):
        table.mark_used(["cmpl-5"], "round-4")
    with pytest.raises(ValueError, match="round_id"):
        table.mark_used([ids[5]], "")


def test_feedback_by_row_id_or_request_id(table: InferenceTable):
    row_id = table.insert(_record(1))
    assert table.set_feedback(row_id, 1) and table.get(row_id).feedback == 1
    assert table.set_feedback("cmpl-1", {"thumbs": "down", "note": "wrong"})
    row = table.get(row_id)
    assert row.feedback == {"thumbs": "down", "note": "wrong"} and row.feedback_at is not None
    assert not table.set_feedback(999, 1) and not table.set_feedback("cmpl-404", 1)
    with pytest.raises(ValueError, match="not null"):
        table.set_feedback(row_id, None)


def test_model_versions_grow_across_opens_and_a_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "t.sqlite"
    with InferenceTable(path) as t:
        assert t.register_model_version("a") == 1
    with InferenceTable(path) as t:
        assert t.register_model_version("b") == 2
        assert [(v, s) for v, s, _ in t.model_versions()] == [(1, "a"), (2, "b")]
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 7")
    with pytest.raises(ValueError, match="schema version 7"):
        InferenceTable(path)


def test_writer_resolves_after_commit_groups_inserts_and_fails_a_bad_record_alone(tmp_path: Path):
    path = tmp_path / "t.sqlite"
    writer = TableWriter(path)
    try:
        version = writer.register_model_version("m").result()
        futures = [writer.insert(_record(i, version=version)) for i in range(200)]
        futures.append(writer.insert(_record(5, version=version)))  # duplicate request id
        futures.append(writer.insert(_record(500, version=version)))
        ids = [f.result(timeout=30) for f in futures[:200]]
        with pytest.raises(sqlite3.IntegrityError):
            futures[200].result(timeout=30)
        last = futures[201].result(timeout=30)
        with InferenceTable(path) as reader:  # another connection sees every acknowledged row: committed
            assert [r.id for r in reader.rows()] == [*ids, last]
            assert reader.get(last).request_id == "cmpl-500"
        assert writer.set_feedback("cmpl-3", "good").result() is True
    finally:
        writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.insert(_record(1000))


def test_a_transaction_closed_without_commit_loses_only_unacknowledged_rows(tmp_path: Path):
    path = tmp_path / "t.sqlite"
    with InferenceTable(path) as t:
        t.register_model_version("m")
        acknowledged = t.insert(_record(1))
    crashed = sqlite3.connect(path, isolation_level=None)
    crashed.execute("BEGIN IMMEDIATE")
    crashed.execute("UPDATE inferences SET outputs_json = '[\"torn\"]' WHERE id = ?", (acknowledged,))
    crashed.execute("INSERT INTO inferences (request_id, created_at, model_version, kind, prompt_json, prompt_hash, "
                    "sampling_json, outputs_json, finish_reasons_json, prompt_tokens, completion_tokens, latency_s) "
                    "VALUES ('lost', 0, 1, 'completion', '\"x\"', 'h', '{}', '[]', '[]', 0, 0, 0)")
    crashed.close()  # no COMMIT
    with InferenceTable(path) as t:
        assert [r.request_id for r in t.rows()] == ["cmpl-1"]
        assert t.get(acknowledged).outputs == ["out 1", "second"]


_WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    from tao_engine.serve import InferenceRecord, TableWriter
    writer = TableWriter(sys.argv[1])
    version = writer.register_model_version("m").result()
    i = 0
    while True:
        batch = [writer.insert(InferenceRecord(f"r-{i + k}", time.time(), version, "completion", f"p {i + k}", {},
                                               [f"o {i + k}"], ["stop"], 1, 1, 0.0)) for k in range(16)]
        for k, future in enumerate(batch):
            print(f"r-{i + k} {future.result()}", flush=True)
        i += 16
""")


def test_killed_writer_process_loses_no_acknowledged_row(tmp_path: Path):
    path = tmp_path / "t.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_SCRIPT, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    acked: dict[str, int] = {}
    deadline = time.monotonic() + 120
    try:
        while len(acked) < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line.endswith("\n"):
                break  # EOF (or a cut-off line: not an acknowledgement)
            request_id, row_id = line.split()
            acked[request_id] = int(row_id)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-write: inserts are queued and a commit may be running
        rest = proc.communicate(timeout=30)[0]
    # Only whole lines are acknowledgements: the kill may cut the last one short (or leave it empty).
    for line in rest.split("\n")[:-1]:
        fields = line.split()
        if len(fields) == 2:
            acked[fields[0]] = int(fields[1])
    assert len(acked) >= 300, f"the writer acknowledged only {len(acked)} rows"
    with InferenceTable(path) as t:
        assert t._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for request_id, row_id in acked.items():
            row = t.get(row_id)
            assert row is not None and row.request_id == request_id and row.outputs == [f"o {request_id[2:]}"]
