"""The quality benchmark's runner end to end, smoke profile, on a tiny random model and a small fake dataset: every
method gets its row, the cells resume (a second run does no work), labels never reach a TAO scorer, plots exist."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bench.quality.cells import Cell, plan_cells
from bench.quality.profiles import METHODS, SMOKE
from bench.quality.records import LABEL_KEYS, LabelFreeScorer, LabelLeakError, load_examples, split_labels
from bench.quality.report import LABELS
from bench.quality.runner import run_benchmark
from tests import helpers
from tests.tokenizer.tokenizer_builders import CHATML_SPECIALS, template, train_byte_level_bpe, write_tokenizer_dir

EOS = 2  # <|im_end|> in the ChatML tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template("smollm2.jinja")}
    return write_tokenizer_dir(tmp_path_factory.mktemp("tok"), train_byte_level_bpe(CHATML_SPECIALS), config)


def _factory(tokenizer_dir: Path):
    from tao_engine.tokenizer import Tokenizer

    def load():
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        model = helpers.tiny_model(seed=0, vocab_size=tokenizer.vocab_size, eos_token_id=EOS,
                                   max_position_embeddings=512)
        return model, tokenizer

    return load


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_datasets(root: Path) -> dict[str, Path]:
    """build_datasets' contract in miniature: SQL records on one SQLite file, math records with an answer."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / "shop.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL);"
                       "INSERT INTO items VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', 30.0);")
    conn.close()
    sql = [{"messages": [{"role": "system", "content": "You write SQLite."},
                         {"role": "user", "content": f"Table items(id, name, price). Question {i}: items under {p}?"}],
            "db_path": str(db.resolve()), "db": "shop", "question": f"items under {p}", "difficulty": "easy",
            "gold_sql": f"SELECT name FROM items WHERE price < {p}"} for i, p in enumerate([2, 13, 31, 5, 20, 40, 3])]
    math = [{"messages": [{"role": "user", "content": f"What is {a} + {a + 1}? Answer: <n>"}],
             "answer": str(2 * a + 1), "steps": 1} for a in range(7)]
    return {"sql_train": _write_jsonl(root / "sql_train.jsonl", sql[:5]),
            "sql_test": _write_jsonl(root / "sql_test.jsonl", sql[5:]),
            "math_train": _write_jsonl(root / "math_train.jsonl", math[:5]),
            "math_test": _write_jsonl(root / "math_test.jsonl", math[5:]),
            "sql_dbs_dir": root}


def test_smoke_profile_end_to_end_resumes_and_keeps_labels_away(tmp_path: Path, tokenizer_dir: Path):
    datasets = fake_datasets(tmp_path / "data")
    work, out = tmp_path / "work", tmp_path / "results" / "quality.md"
    kwargs = dict(profile=SMOKE, datasets=datasets, load_model=_factory(tokenizer_dir), tasks=["sql", "math"],
                  methods=list(METHODS), seeds=[0, 1], work_dir=work, out=out, log=lambda _: None)
    first = run_benchmark(**kwargs)

    planned = plan_cells(SMOKE, ["sql", "math"], METHODS, [0, 1])
    assert sorted(first.ran) == sorted(c.key for c in planned) and not first.skipped
    assert all((work / "smoke" / "cells" / f"{c.key}.json").is_file() for c in planned)
    text = out.read_text()
    for task in ("sql", "math"):
        for method in ("base", "sft", "tao", "tao_judge"):
            assert f"| {task} | {LABELS[method]} |" in text, (task, method)
        for strategy in ("none (base)", "plain", "reason", "mixed"):  # the exploration-compute rows
            assert f"| {task} | {strategy} |" in text, (task, strategy)
        for n in SMOKE.samples:
            assert f"| {task} | {n} |" in text  # the compute-scaling rows
    assert "tuned / base" in text and "reward pair acc" in text
    assert [p.name for p in first.plots] == ["quality_vs_steps.png", "quality_vs_samples.png",
                                             "quality_vs_exploration.png"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in first.plots)

    records = {(r["task"], r["method"], r["n"], r["seed"]): r for r in first.records}
    for record in first.records:
        method = record["method"]
        if method in ("tao", "tao_judge", "tao_reason", "tao_mixed"):
            # The scorers ran every step and never saw a label key (the guard would have raised).
            assert record["scorer_calls"] == SMOKE.steps
            assert not set(record["scorer_context_keys"]) & set(LABEL_KEYS)
            assert {"pass_rate", "reward_pair_acc", "zero_variance_frac", "entropy_last"} <= set(record["diagnostics"])
        if method in ("sft", "tao", "tao_judge", "tao_reason", "tao_mixed"):
            assert [p["step"] for p in record["curve"]][-1] == SMOKE.steps
            assert len(record["history"]) == SMOKE.steps
    sql_keys = set(records[("sql", "tao", SMOKE.rules_n, 0)]["scorer_context_keys"])
    assert {"db_path", "prompt_messages"} <= sql_keys
    speed = records[("sql", "speed", 1, 0)]
    assert speed["params_base"] == speed["params_tuned"] and speed["tok_s_base"] > 0 and speed["tok_s_tuned"] > 0
    assert sorted(speed["tuned"]) == ["tao", "tao_mixed", "tao_reason"]  # every kept adapter served, merged
    assert all(t["params"] == speed["params_base"] and t["tok_s"] > 0 for t in speed["tuned"].values())
    for method, strategy in (("tao_reason", "reason"), ("tao_mixed", "mixed")):
        record = records[("math", method, SMOKE.rules_n, 1)]
        assert record["exploration"]["strategy"] == strategy
        # exploring generated more tokens than the update trains: the reasoning is cut off by the transform
        assert all(h["generated_tokens"] >= h["trained_tokens"] for h in record["history"])
    mixed = records[("math", "tao_mixed", SMOKE.rules_n, 0)]["exploration"]
    assert [e["strategy"] for e in mixed["mixed"]] == ["plain", "reason"]
    assert sum(e["n"] for e in mixed["mixed"]) == SMOKE.rules_n

    second = run_benchmark(**kwargs)  # everything finished: no cell runs again, the same report comes out
    assert second.ran == [] and sorted(second.skipped) == sorted(first.ran)
    assert out.read_text() == text


def test_interrupted_run_continues_with_the_missing_cells(tmp_path: Path, tokenizer_dir: Path):
    datasets = fake_datasets(tmp_path / "data")
    kwargs = dict(profile=SMOKE, datasets=datasets, load_model=_factory(tokenizer_dir), tasks=["math"], seeds=[0],
                  work_dir=tmp_path / "work", out=tmp_path / "quality.md", log=lambda _: None)
    done = run_benchmark(methods=["base"], **kwargs)
    assert done.ran == ["math-base-n1-seed0"]
    more = run_benchmark(methods=["base", "sft"], **kwargs)
    assert more.skipped == ["math-base-n1-seed0"] and more.ran == ["math-sft-n1-seed0"]
    with pytest.raises(ValueError, match="unknown"):
        run_benchmark(methods=["rlhf"], **kwargs)


def test_split_labels_moves_every_label_out_of_the_prompt_context(tmp_path: Path):
    datasets = fake_datasets(tmp_path / "data")
    for split in ("sql_train", "math_train"):
        for example in load_examples(datasets[split]):
            assert not set(example.record.context) & set(LABEL_KEYS)
            assert set(example.gold) & set(LABEL_KEYS)
    with pytest.raises(ValueError, match="messages"):
        split_labels({"prompt": "x", "answer": "1"})


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def score_groups(self, prompts, groups, **context):
        self.seen.append(context)
        return [[0.0] * len(g) for g in groups]


def test_the_label_guard_refuses_label_keys_and_gold_queries():
    inner = _Recorder()
    guard = LabelFreeScorer(inner, gold_sql=["SELECT name  FROM items WHERE price < 2"])
    guard.score_groups(["q"], [["a", "b"]], db_path=["x.db"])
    assert inner.seen == [{"db_path": ["x.db"]}] and guard.seen_keys == {"db_path"}
    with pytest.raises(LabelLeakError, match="answer"):
        guard.score_groups(["q"], [["a"]], answer=["3"])
    with pytest.raises(LabelLeakError, match="gold SQL"):
        guard.score_groups(["q"], [["a"]], hint=["select name from items where price < 2"])
    with pytest.raises(LabelLeakError, match="prompt"):
        guard.score_groups(["Use SELECT name FROM items WHERE price < 2"], [["a"]])
    assert len(inner.seen) == 1  # nothing leaked through


def test_plan_runs_base_and_speed_once_per_task_and_speed_last():
    cells = plan_cells(SMOKE, ["sql"], METHODS, [0, 1])
    assert cells[0] == Cell("sql", "base", 1, 0) and cells[-1] == Cell("sql", "speed", 1, 0)
    assert sum(c.method == "tao" for c in cells) == 2 * len(SMOKE.samples)
    assert sum(c.method in ("sft", "tao_judge") for c in cells) == 4
    explored = [c for c in cells if c.method in ("tao_reason", "tao_mixed")]
    assert len(explored) == 4 and {c.n for c in explored} == {SMOKE.rules_n}
    assert max(cells.index(c) for c in explored) < cells.index(Cell("sql", "speed", 1, 0))  # speed serves them


def test_cli_flags_select_the_pieces_and_reject_unknown_tasks():
    from bench.bench_quality import chosen_profile, parse_args

    args = parse_args(["--profile", "smoke", "--tasks", "arith", "--seeds", "0,1", "--methods", "base,tao"])
    assert (args.profile, args.tasks, args.seeds, args.methods) == ("smoke", ["arith"], (0, 1), ["base", "tao"])
    profile = chosen_profile(args)
    assert profile.tasks == ("arith",) and profile.seeds == (0, 1) and profile.scaling_seeds == (0,)
    defaults = parse_args([])
    assert defaults.profile == "full" and defaults.suite == "competence" and defaults.workers == 2
    assert chosen_profile(defaults).tasks == ("extract", "arith", "table_sql", "passage_qa", "sql", "math")
    assert defaults.out == Path("bench/results/quality.md") and defaults.work_dir == Path("runs/bench-quality")
    with pytest.raises(SystemExit):
        parse_args(["--tasks", "sql,chess"])
    with pytest.raises(SystemExit):
        parse_args(["--methods", "base,judge"])
