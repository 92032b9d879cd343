"""The inference table: one SQLite row per served request, the data that later tuning rounds learn from.

Schema (PRAGMA user_version = 1):

    inferences           one row per answered request
      id                 INTEGER PRIMARY KEY AUTOINCREMENT (never reused)
      request_id         TEXT UNIQUE: the response id the client saw ("chatcmpl-...", "cmpl-...")
      created_at         REAL: unix time the request arrived
      model_version      INTEGER -> model_versions.version: the weights that generated the output
      kind               TEXT: 'chat' | 'completion'
      prompt_json        TEXT: chat: [{"role", "content"}, ...]; completion: "text" or [token ids]
      prompt_hash        TEXT: sha256 of the normalized prompt (prompt_hash.py), the dedupe key of tuning rounds
      sampling_json      TEXT: the sampling parameters that ran (SamplingParams fields)
      outputs_json       TEXT: ["text of choice 0", ...]
      finish_reasons_json TEXT: ["stop" | "length" | "abort", ...] per choice
      prompt_tokens      INTEGER
      completion_tokens  INTEGER: summed over the choices
      latency_s          REAL: arrival to the last token, as the server saw it
      user               TEXT NULL: the request's `user` field
      feedback_json      TEXT NULL: any JSON value, set later (POST /v1/feedback or set_feedback); latest wins
      feedback_at        REAL NULL
      used_in_round      TEXT NULL: the tuning round that trained on this row
    used_prompt_hashes   prompt_hash PRIMARY KEY, round_id, used_at: a hash a round used is never offered again
    model_versions       version INTEGER PRIMARY KEY, source TEXT (model directory), loaded_at REAL

Durability: WAL journal, synchronous=FULL: a transaction is on disk when COMMIT returns, so a row whose insert
returned (the server sends its response only after that) survives a process crash or a power cut.

Threads: an InferenceTable holds one sqlite3 connection and belongs to the thread that opened it (sqlite3's
check_same_thread enforces it). The server writes through a TableWriter thread; a tuner opens its own table.
Several processes may share the file: WAL lets readers run beside the writer, and writers wait (busy timeout).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tao_engine.serve.prompt_hash import KINDS, is_prompt_hash, prompt_hash

SCHEMA_VERSION = 1
_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit

_SCHEMA = (
    """CREATE TABLE model_versions (
        version INTEGER PRIMARY KEY, source TEXT NOT NULL, loaded_at REAL NOT NULL)""",
    """CREATE TABLE inferences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        model_version INTEGER NOT NULL REFERENCES model_versions(version),
        kind TEXT NOT NULL CHECK (kind IN ('chat', 'completion')),
        prompt_json TEXT NOT NULL,
        prompt_hash TEXT NOT NULL,
        sampling_json TEXT NOT NULL,
        outputs_json TEXT NOT NULL,
        finish_reasons_json TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        user TEXT,
        feedback_json TEXT,
        feedback_at REAL,
        used_in_round TEXT)""",
    "CREATE INDEX inferences_prompt_hash ON inferences(prompt_hash)",
    "CREATE INDEX inferences_used_in_round ON inferences(used_in_round)",
    """CREATE TABLE used_prompt_hashes (
        prompt_hash TEXT PRIMARY KEY, round_id TEXT NOT NULL, used_at REAL NOT NULL)""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_COLUMNS = ("id, request_id, created_at, model_version, kind, prompt_json, prompt_hash, sampling_json, outputs_json, "
            "finish_reasons_json, prompt_tokens, completion_tokens, latency_s, user, feedback_json, feedback_at, "
            "used_in_round")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class InferenceRecord:
    """What the server logs for one request (the table adds id, prompt_hash, feedback and used_in_round)."""

    request_id: str
    created_at: float
    model_version: int
    kind: str
    prompt: Any  # chat: list of {"role", "content"}; completion: text or token ids
    sampling: Mapping[str, Any]
    outputs: Sequence[str]
    finish_reasons: Sequence[str]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    user: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"InferenceRecord.kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError("InferenceRecord.request_id must be a non-empty string")
        if len(self.outputs) != len(self.finish_reasons):
            raise ValueError(
                f"InferenceRecord: {len(self.outputs)} outputs but {len(self.finish_reasons)} finish reasons"
            )


@dataclass(frozen=True)
class InferenceRow(InferenceRecord):
    id: int = 0
    prompt_hash: str = ""
    feedback: Any = None
    feedback_at: float | None = None
    used_in_round: str | None = None


@dataclass(frozen=True)
class UnusedPrompt:
    """One prompt no round used yet: its first row, and how many rows share its hash."""

    id: int
    prompt_hash: str
    kind: str
    prompt: Any
    created_at: float
    model_version: int
    times_seen: int


class InferenceTable:
    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every write below runs in an explicit BEGIN IMMEDIATE.
        self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{self.path}: SQLite refused WAL journaling (got {mode!r}); use a local file system")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA:
                    self._conn.execute(statement)
            elif version != SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path}: inference table schema version {version}, this tao_engine reads {SCHEMA_VERSION}"
                )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock between processes
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> InferenceTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- model versions -------------------------------------------------------------------------------------------

    def register_model_version(self, source: str) -> int:
        """A new model version (1, 2, ...) for weights loaded from `source`; every start and reload gets one."""
        with self._transaction():
            (latest,) = self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM model_versions").fetchone()
            self._conn.execute("INSERT INTO model_versions VALUES (?, ?, ?)", (latest + 1, str(source), time.time()))
        return int(latest + 1)

    def model_versions(self) -> list[tuple[int, str, float]]:
        """(version, source, loaded_at) in version order."""
        return [tuple(r) for r in self._conn.execute("SELECT * FROM model_versions ORDER BY version")]

    # ---- rows -----------------------------------------------------------------------------------------------------

    def insert(self, record: InferenceRecord) -> int:
        return self.insert_many([record])[0]

    def insert_many(self, records: Sequence[InferenceRecord]) -> list[int]:
        """Insert in one transaction (all or none); returns the row ids. Durable when this returns."""
        ids = []
        with self._transaction():
            for r in records:
                cursor = self._conn.execute(
                    f"INSERT INTO inferences ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "NULL, NULL, NULL)",
                    (r.request_id, r.created_at, r.model_version, r.kind, _json(r.prompt),
                     prompt_hash(r.kind, r.prompt), _json(dict(r.sampling)), _json(list(r.outputs)),
                     _json(list(r.finish_reasons)), r.prompt_tokens, r.completion_tokens, r.latency_s, r.user),
                )
                ids.append(int(cursor.lastrowid))
        return ids

    def set_feedback(self, key: int | str, feedback: Any) -> bool:
        """Attach feedback (any JSON value but null) to the row with id `key` (int) or request id `key` (str).
        False when no such row exists."""
        if feedback is None:
            raise ValueError("set_feedback: feedback must be a JSON value (number, string, object...), not null")
        column = self._key_column(key)
        with self._transaction():
            cursor = self._conn.execute(
                f"UPDATE inferences SET feedback_json = ?, feedback_at = ? WHERE {column} = ?",
                (_json(feedback), time.time(), key),
            )
        return cursor.rowcount > 0

    def get(self, key: int | str) -> InferenceRow | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM inferences WHERE {self._key_column(key)} = ?", (key,)
        ).fetchone()
        return None if row is None else _row(row)

    def rows(self, after_id: int = 0, limit: int | None = None) -> list[InferenceRow]:
        """Rows with id > after_id, in id order."""
        query = f"SELECT {_COLUMNS} FROM inferences WHERE id > ? ORDER BY id LIMIT ?"
        return [_row(r) for r in self._conn.execute(query, (after_id, -1 if limit is None else limit))]

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM inferences").fetchone()[0])

    @staticmethod
    def _key_column(key: int | str) -> str:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"a row key is an int id or a str request id, got {key!r}")
        return "id" if isinstance(key, int) else "request_id"

    # ---- tuning rounds --------------------------------------------------------------------------------------------

    _UNUSED = """FROM inferences i JOIN (
                   SELECT prompt_hash, MIN(id) AS first_id, COUNT(*) AS seen FROM inferences
                   WHERE prompt_hash NOT IN (SELECT prompt_hash FROM used_prompt_hashes) AND (? IS NULL OR kind = ?)
                   GROUP BY prompt_hash) u ON i.id = u.first_id"""

    def unused_prompts(self, limit: int | None = None, kind: str | None = None) -> list[UnusedPrompt]:
        """Prompts whose hash no round used, one per hash (its first row), oldest first."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unused_prompts: kind must be one of {KINDS} or None, got {kind!r}")
        rows = self._conn.execute(
            "SELECT i.id, i.prompt_hash, i.kind, i.prompt_json, i.created_at, i.model_version, u.seen "
            f"{self._UNUSED} ORDER BY i.id LIMIT ?",
            (kind, kind, -1 if limit is None else limit),
        )
        return [UnusedPrompt(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6]) for r in rows]

    def count_unused_prompts(self, kind: str | None = None) -> int:
        return int(self._conn.execute(f"SELECT COUNT(*) {self._UNUSED}", (kind, kind)).fetchone()[0])

    def mark_used(self, ids_or_hashes: Iterable[int | str], round_id: str) -> int:
        """Record that round `round_id` trained on these rows (int ids) or prompts (sha256 hex hashes).

        A row id marks that row and retires its hash; a hash retires itself and marks every row carrying it. Rows
        already marked keep their first round. Returns how many rows were newly marked; an unknown id is an error
        and nothing is marked."""
        if not isinstance(round_id, str) or not round_id:
            raise ValueError(f"mark_used: round_id must be a non-empty string, got {round_id!r}")
        ids: list[int] = []
        hashes: list[str] = []
        for item in ids_or_hashes:
            if isinstance(item, int) and not isinstance(item, bool):
                ids.append(item)
            elif is_prompt_hash(item):
                hashes.append(item)
            else:
                raise ValueError(f"mark_used: {item!r} is neither a row id (int) nor a prompt hash (64 hex digits)")
        now, marked = time.time(), 0
        with self._transaction():
            retired = set(hashes)
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found = self._conn.execute(
                    f"SELECT id, prompt_hash FROM inferences WHERE id IN ({marks})", chunk
                ).fetchall()
                missing = sorted(set(chunk) - {r[0] for r in found})
                if missing:
                    raise ValueError(f"mark_used: no rows with ids {missing[:10]}")
                retired.update(r[1] for r in found)
                marked += self._conn.execute(
                    f"UPDATE inferences SET used_in_round = ? WHERE used_in_round IS NULL AND id IN ({marks})",
                    (round_id, *chunk),
                ).rowcount
            for chunk in _chunks(hashes):
                marked += self._conn.execute(
                    "UPDATE inferences SET used_in_round = ? WHERE used_in_round IS NULL "
                    f"AND prompt_hash IN ({','.join('?' * len(chunk))})",
                    (round_id, *chunk),
                ).rowcount
            self._conn.executemany(
                "INSERT OR IGNORE INTO used_prompt_hashes VALUES (?, ?, ?)", [(h, round_id, now) for h in retired]
            )
        return marked

    def rows_used_in_round(self, round_id: str) -> list[int]:
        query = "SELECT id FROM inferences WHERE used_in_round = ? ORDER BY id"
        return [int(r[0]) for r in self._conn.execute(query, (round_id,))]


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _row(r: tuple[Any, ...]) -> InferenceRow:
    return InferenceRow(
        id=r[0], request_id=r[1], created_at=r[2], model_version=r[3], kind=r[4], prompt=json.loads(r[5]),
        prompt_hash=r[6], sampling=json.loads(r[7]), outputs=json.loads(r[8]), finish_reasons=json.loads(r[9]),
        prompt_tokens=r[10], completion_tokens=r[11], latency_s=r[12], user=r[13],
        feedback=None if r[14] is None else json.loads(r[14]), feedback_at=r[15], used_in_round=r[16],
    )
