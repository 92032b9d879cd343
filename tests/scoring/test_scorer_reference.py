"""The scorer reference is generated from the registry and stays honest (issue 23 item 5): every registered scorer
has an entry saying what it computes, every key of its table has a type, a default and a meaning, and
docs/scorers.md is the generated text (regenerate it with `python -m tao_engine.scoring.reference`)."""

from __future__ import annotations

from pathlib import Path

from tao_engine.cli import main
from tao_engine.scoring.reference import reference_markdown, reference_text, scorer_entries
from tao_engine.scoring.registry import BUILTIN_SCORERS

DOC = Path(__file__).resolve().parents[2] / "docs" / "scorers.md"


def test_every_registered_scorer_has_an_entry_with_every_key_explained():
    entries = {e.name: e for e in scorer_entries()}
    assert list(entries) == list(BUILTIN_SCORERS)
    for name, entry in entries.items():
        assert len(entry.summary.split()) >= 5, f"{name}: its class docstring should say what it computes"
        unexplained = [p.name for p in entry.params if not p.meaning]
        assert not unexplained, f"{name}: comment what {unexplained} mean where they are defined"
        assert all(p.type for p in entry.params), f"{name}: annotate the types of its keys"
        assert f"\n## {name}\n" in reference_markdown()


def test_the_sql_entry_explains_the_keys_and_counters_users_asked_about():
    text = reference_text("sql") + reference_text("sql_agreement")
    for term in ("denied (refused by the read-only guard", "no_sql (replies with no SQL found)",
                 "extract = \"sql\"", "mode = \"fraction\"", "min_rows = 1"):
        assert term in text, term


def test_docs_scorers_md_is_the_generated_reference():
    assert DOC.read_text() == reference_markdown(), "regenerate: python -m tao_engine.scoring.reference > " \
                                                    "docs/scorers.md"


def test_the_scorers_command_prints_one_or_all(capsys):
    assert main(["scorers", "majority_vote"]) == 0
    out = capsys.readouterr().out
    assert "majority_vote  (group)" in out and "sql  (group)" not in out
    assert main(["scorers", "nope"]) == 2
    assert "no built-in scorer 'nope'" in capsys.readouterr().err
