"""The SQL scorers' memory is bounded (issue 24 item 2): a byte cap on each result besides the row cap, result sets
compared by digest and never kept for the group, so a group of 16 giant results stays small; and no file is left
beside the database, even a WAL-mode one."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

from tao_engine.scoring.sql_exec import execute_readonly

# The tester's query: 300 rows of a ~1 MB blob each (RSS 255 -> 542 MB for one candidate, 1,401 MB for four).
GIANT = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c LIMIT 300) "
         "SELECT zeroblob(999999) FROM c")


def _db(path, wal: bool = False):
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"n{i}") for i in range(50)])
    conn.commit()
    conn.close()
    return path


def test_a_result_past_the_byte_cap_is_an_error_not_a_memory_spike(tmp_path):
    db = _db(tmp_path / "db.sqlite")
    result = execute_readonly(db, GIANT, time_limit_s=5.0)
    assert not result.ok and result.error.startswith("too large") and "max_result_bytes" in result.error
    small = execute_readonly(db, "SELECT name FROM t WHERE id < 3 ORDER BY id", max_result_bytes=1000)
    assert small.ok and small.rows == (("n0",), ("n1",), ("n2",))
    assert not execute_readonly(db, "SELECT name FROM t", max_result_bytes=100).ok  # 50 rows > 100 bytes


def test_results_compare_by_digest_without_keeping_rows(tmp_path):
    db = _db(tmp_path / "db.sqlite")
    a = execute_readonly(db, "SELECT id FROM t WHERE id < 5", keep_rows=False)
    b = execute_readonly(db, "SELECT id FROM t WHERE id < 5 ORDER BY id DESC", keep_rows=False)
    c = execute_readonly(db, "SELECT id * 1.0 FROM t WHERE id < 5", keep_rows=False)  # 1.0 equals 1, as before
    assert a.rows == () and a.num_rows == 5
    assert a.result_key(ordered=False) == b.result_key(ordered=False) == c.result_key(ordered=False)
    assert a.result_key(ordered=True) != b.result_key(ordered=True)


_PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from tao_engine.scoring.sql import SqlVerifier
    from tao_engine.scoring.sql_agreement import SqlAgreementScorer
    db, query = sys.argv[1], sys.argv[2]
    scorers = [SqlVerifier(db_path=db, time_limit_s=10.0), SqlAgreementScorer(db_path=db, time_limit_s=10.0)]
    for s in scorers:
        s.score_groups(["q"], [["SELECT name FROM t WHERE id < 3"] * 2])  # warm up: imports, caches
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scores = [s.score_groups(["q"], [[query] * 16])[0] for s in scorers]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mb": (after - before) / 1024, "scores": scores}))
""")


def test_rss_stays_bounded_for_a_group_of_16_giant_results(tmp_path):
    db = _db(tmp_path / "db.sqlite")
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(db), GIANT], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # Before: every candidate's 300 MB result was kept for the group (n=16 approached 5 GB). Now a result stops at
    # the byte cap (2 MB) and only its digest is kept.
    assert report["peak_growth_mb"] < 64, report
    assert report["scores"] == [[0.0] * 16, [0.0] * 16]  # too large: not "executes", joins no cluster


def test_no_file_is_left_beside_a_wal_database(tmp_path):
    db = _db(tmp_path / "wal.sqlite", wal=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.sqlite"]
    assert execute_readonly(db, "SELECT count(*) FROM t").rows == ((50,),)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.sqlite"]  # before: wal.sqlite-shm and -wal
