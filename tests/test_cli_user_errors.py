"""No user error ends in a traceback, anywhere in the CLI (issue 24, weakness classes): every subcommand walks a table
of bad inputs (missing or wrong files, bad TOML, bad bytes, a closed stdin, a busy port, a scorer module that cannot
be imported, an occupied output directory) and answers each with one line naming the file, line or field, exit code
2; Ctrl-C during `tune` exits 130 and says where the checkpoint is."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tao_engine.cli import main
from tests.run_fixtures import tiny_model_dir, to_toml, tune_table, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path, Path], list[str]]  # (tmp_path, model_dir) -> argv, after writing what the case needs
    needle: str  # the file, line or field the one-line error must name
    untouched: str | None = None  # a path (relative to tmp_path) that must still not exist afterwards


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _prompts(tmp: Path, lines: bytes = b'{"prompt": "Hi"}\n{"prompt": "Yo"}\n') -> Path:
    return _write(tmp / "prompts.jsonl", lines)


def _tune(tmp: Path, model_dir: Path, *, prompts: Path | None = None, scorer: str = "length",
          toml: str | bytes | None = None, output_dir: Path | None = None, extra: tuple[str, ...] = (),
          **scorer_params: object) -> list[str]:
    table = tune_table(model_dir, prompts or _prompts(tmp), output_dir or tmp / "run", steps=2, scorer=scorer,
                       **scorer_params)
    path = _write(tmp / "tao.toml", toml) if toml is not None else to_toml(table, tmp / "tao.toml")
    return ["tune", "--config", str(path), "--quiet", *extra]


def _busy_port(tmp: Path, model_dir: Path, holder: list[socket.socket]) -> list[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    holder.append(sock)
    return ["serve", "--model", str(model_dir), "--port", str(sock.getsockname()[1]), "--table", str(tmp / "t.sqlite")]


_HELD: list[socket.socket] = []

CASES = [
    # import-gguf
    Case("import-gguf missing file", lambda t, m: ["import-gguf", str(t / "missing.gguf"), str(t / "out")],
         "missing.gguf", "out"),
    Case("import-gguf bad bytes", lambda t, m: ["import-gguf", str(_write(t / "x.gguf", b"\xff\xfeNOTGGUF" * 8)),
                                                str(t / "out")], "x.gguf", "out"),
    Case("import-gguf out_dir is a file", lambda t, m: ["import-gguf", str(_write(t / "x.gguf", b"GGUF")),
                                                        str(_write(t / "out", "file"))], "out"),
    # chat
    Case("chat missing model", lambda t, m: ["chat", "--model", str(t / "nowhere"), "--prompt", "hi"], "nowhere"),
    # generate
    Case("generate missing input", lambda t, m: ["generate", "--model", str(m), "--input", str(t / "in.jsonl"),
                                                 "--output", str(t / "o.jsonl")], "in.jsonl", "o.jsonl"),
    Case("generate input is a folder", lambda t, m: ["generate", "--model", str(m), "--input", str(t),
                                                     "--output", str(t / "o.jsonl")], "not a file", "o.jsonl"),
    Case("generate bad JSON", lambda t, m: ["generate", "--model", str(m), "--input",
                                            str(_prompts(t, b'{"prompt": "a"}\n{"prompt": \n')),
                                            "--output", str(t / "o.jsonl")], "prompts.jsonl:2: not valid JSON",
         "o.jsonl"),
    Case("generate bad bytes", lambda t, m: ["generate", "--model", str(m), "--input",
                                             str(_prompts(t, b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n')),
                                             "--output", str(t / "o.jsonl")], "prompts.jsonl:2: not UTF-8",
         "o.jsonl"),
    Case("generate output is a folder", lambda t, m: ["generate", "--model", str(m), "--input", str(_prompts(t)),
                                                      "--output", str(t)], "--output"),
    Case("generate missing model", lambda t, m: ["generate", "--model", str(t / "nomodel"), "--input",
                                                 str(_prompts(t)), "--output", str(t / "o.jsonl")], "nomodel",
         "o.jsonl"),
    # tune
    Case("tune missing config", lambda t, m: ["tune", "--config", str(t / "nope.toml")], "nope.toml", "run"),
    Case("tune bad TOML syntax", lambda t, m: _tune(t, m, toml="[run]\nsteps = = 3\n"),
         "tao.toml: invalid TOML", "run"),
    Case("tune bad TOML bytes", lambda t, m: _tune(t, m, toml=b"[run]\nsteps = 3 # \xff\xfe\n"),
         "tao.toml: not UTF-8", "run"),
    Case("tune unknown field", lambda t, m: _tune(t, m, extra=("--optim.learning_rate", "1e-3")),
         "learning_rate", "run"),
    Case("tune bad field value", lambda t, m: _tune(t, m, extra=("--run.steps", "-1")), "steps", "run"),
    Case("tune scorer module missing", lambda t, m: _tune(t, m, scorer="no_such_module_xyz:fn"),
         "no_such_module_xyz"),
    Case("tune scorer module fails to import", lambda t, m: _tune(t, m, scorer="tests.broken_scorer_module:fn"),
         "tests.broken_scorer_module"),
    Case("tune prompts bad bytes", lambda t, m: _tune(t, m, prompts=_prompts(t, b'{"prompt": "a"}\n\xff\n')),
         "prompts.jsonl:2: not UTF-8"),
    Case("tune output_dir is a file", lambda t, m: _tune(t, m, output_dir=_write(t / "runfile", "x")),
         "output_dir"),
    Case("tune output_dir holds a run", lambda t, m: _tune(t, m, output_dir=_write(t / "old" / "metrics.jsonl",
                                                                                    "{}").parent), "not empty"),
    # flywheel
    Case("flywheel missing config", lambda t, m: ["flywheel", "--table", str(t / "i.sqlite"), "--config",
                                                  str(t / "nope.toml")], "nope.toml"),
    Case("flywheel bad TOML", lambda t, m: ["flywheel", "--table", str(t / "i.sqlite"), "--config",
                                            str(_write(t / "f.toml", "[run\n"))], "f.toml: invalid TOML"),
    Case("flywheel output_dir is a file", lambda t, m: ["flywheel", "--table", str(t / "i.sqlite"), "--config",
                                                        str(to_toml(tune_table(m, _prompts(t), _write(t / "f", "x")),
                                                                    t / "f.toml"))], "output_dir"),
    # serve
    Case("serve busy port", lambda t, m: _busy_port(t, m, _HELD), "cannot listen", "t.sqlite"),
    Case("serve missing model", lambda t, m: ["serve", "--model", str(t / "nomodel"), "--port", "0", "--table",
                                              str(t / "t.sqlite")], "nomodel", "t.sqlite"),
    Case("serve table is a folder", lambda t, m: ["serve", "--model", str(m), "--port", "0", "--table", str(t)],
         "--table"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_user_error_is_one_line_with_exit_code_2(case, tmp_path, model_dir, capsys):
    argv = case.argv(tmp_path, model_dir)
    try:
        code = main(argv)
    finally:
        while _HELD:
            _HELD.pop().close()
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"tao-engine {argv[0]}: error: ") and case.needle in last, err
    if case.untouched is not None:
        assert not (tmp_path / case.untouched).exists()  # nothing created before the error


def test_chat_with_a_closed_stdin_is_a_user_error():
    out = subprocess.run([sys.executable, "-m", "tao_engine", "chat", "--model", str(REPO)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.close(0),
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "stdin is closed" in out.stderr and "--prompt" in out.stderr


def test_ctrl_c_during_tune_exits_130_and_says_where_the_checkpoint_is(tmp_path, model_dir, capsys):
    argv = _tune(tmp_path, model_dir, scorer="tests.step_scorers:InterruptOnCall", call=4, extra=("--run.steps", "5"))
    assert main(argv) == 130  # Ctrl-C in a later step, after at least one checkpoint
    err = capsys.readouterr().err
    assert "Traceback" not in err
    kept = re.search(r"interrupted \(step \d abandoned\); the run up to step \d is saved in (\S+)\n  resume: ", err)
    assert kept is not None, err
    checkpoint = Path(kept.group(1))
    assert checkpoint.parent == (tmp_path / "run").resolve() and (checkpoint / "checkpoint.json").is_file()
    assert main([*argv, "--resume"]) == 0  # and the run continues from it


def test_an_eval_file_without_answers_is_an_error(tmp_path, model_dir, capsys):
    argv = _tune(tmp_path, model_dir)
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "2+2?"}, {"prompt": "3+3?"}])
    assert main([*argv, "--data.eval", str(evals)]) == 2  # before: eval_score reported as if it measured something
    err = capsys.readouterr().err
    assert "eval.jsonl: no line has the label evaluator 'numeric' needs" in err and 'no "answer"' in err
