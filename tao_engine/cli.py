"""The `tao-engine` command line (also `python -m tao_engine`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_doctor(args: argparse.Namespace) -> int:
    from tao_engine.doctor import report

    print(report(), end="")
    return 0


def _cmd_import_gguf(args: argparse.Namespace) -> int:
    from tao_engine.gguf_import import import_gguf

    out = import_gguf(args.file, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from tao_engine.chat import run_chat

    return run_chat(args)


def _cmd_generate(args: argparse.Namespace) -> int:
    from tao_engine.generate_cli import run_generate

    return run_generate(args)


def _cmd_tune(args: argparse.Namespace) -> int:
    if args.help_config:
        from tao_engine.rl.config_help import help_config

        print(help_config(), end="")
        return 0
    from tao_engine.tune_cli import run_tune

    return run_tune(args, args.config_flags)


def _cmd_init_config(args: argparse.Namespace) -> int:
    from tao_engine.rl.starter_config import write_starter

    path = write_starter(args.kind, args.output, args.prompts, args.force)
    print(f"wrote {path}: edit it, check it with `tao-engine probe --config {path}`, then `tao-engine tune --config "
          f"{path}`", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tao_engine.rl.final_model import export_checkpoint

    path, step = export_checkpoint(args.run_dir, args.step, args.output, args.overwrite)
    print(f"wrote {path}: the model of step {step}, adapters merged (serve it: tao-engine serve --model {path})",
          file=sys.stderr)
    return 0


def _cmd_scorers(args: argparse.Namespace) -> int:
    from tao_engine.scoring.reference import reference_text

    print(reference_text(args.name), end="")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from tao_engine.probe_cli import run_probe_command

    return run_probe_command(args, args.config_flags)


def _cmd_flywheel(args: argparse.Namespace) -> int:
    from tao_engine.flywheel.command import run_flywheel_command

    return run_flywheel_command(args, args.config_flags)


def _cmd_serve(args: argparse.Namespace) -> int:
    from tao_engine.serve.command import run_serve

    return run_serve(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tao_engine.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tao-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="show torch/triton/CUDA/extension status and the backend each op uses")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("import-gguf", help="convert a GGUF file into an HF-layout model directory")
    p.add_argument("file", help="the .gguf file")
    p.add_argument("out_dir", help="directory to create (config.json, safetensors, tokenizer files)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty out_dir")
    p.set_defaults(func=_cmd_import_gguf)

    p = sub.add_parser("chat", help="chat with a model directory (default: the bundled SmolLM2)")
    from tao_engine.chat import add_chat_arguments

    add_chat_arguments(p)
    p.set_defaults(func=_cmd_chat)

    p = sub.add_parser("generate", help="sample completions for a JSONL file of prompts with the paged engine")
    from tao_engine.generate_cli import add_generate_arguments

    add_generate_arguments(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "tune",
        help="TAO: tune a model on unlabeled prompts (config TOML; every field also a --section.field flag)",
        description="Generate candidates, score them without labels, update the model; repeat.",
    )
    p.add_argument("--config", default=None, help="TOML file; its sections and fields: --help-config; a starting "
                   "file: tao-engine init-config")
    p.add_argument("--help-config", action="store_true", help="print every config section and field (type, default, "
                   "meaning), generated from the code, and exit")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in "
                   "run.output_dir (the configuration must match the run's; run.steps may grow)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in run.output_dir (a new run "
                   "refuses a non-empty directory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--from-table", default=None, metavar="TABLE", help="train on the unused prompts of this inference "
                   "table (serve --table) instead of [data] prompts; writes run.output_dir/round-<k> and rounds.json")
    p.add_argument("--min-prompts", type=int, default=1, help="with --from-table: refuse a round with fewer prompts")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("init-config", help="write a commented starting TAO config for a kind of task")
    from tao_engine.rl.starter_config import KINDS

    p.add_argument("--kind", required=True, choices=KINDS, help="math (numbers by majority vote), sql (verified on "
                   "each prompt's database), json (schema + grounded values), text (self-certainty + length)")
    p.add_argument("--output", default="tao.toml", help="the TOML file to write (default: tao.toml)")
    p.add_argument("--prompts", default=None, help="your prompts file, written into [data] prompts")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_cmd_init_config)

    p = sub.add_parser("export", help="write the tuned model (adapters merged) of any checkpoint of a tune run")
    p.add_argument("run_dir", help="the run's directory (run.output_dir)")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the newest)")
    p.add_argument("--output", default=None, help="the model directory to write (default: RUN_DIR/final)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("scorers", help="what each built-in scorer computes, its keys and its metrics")
    p.add_argument("name", nargs="?", default=None, help="one scorer (default: all)")
    p.set_defaults(func=_cmd_scorers)

    p = sub.add_parser("probe", help="will TAO work on this task? Sample and score some prompts as tune would, print "
                       "the statistics and a go / weak / no-go verdict with reasons and fixes (exit 3: no-go)")
    from tao_engine.probe_cli import add_probe_arguments

    add_probe_arguments(p)
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("flywheel", help="train a round whenever N new prompts reached the inference table, then "
                       "reload the server (every TAO config field is also a --section.field flag)")
    from tao_engine.flywheel.command import add_flywheel_arguments

    add_flywheel_arguments(p)
    p.set_defaults(func=_cmd_flywheel)

    p = sub.add_parser("serve", help="OpenAI-compatible HTTP API on the engine; logs every request to a table")
    from tao_engine.serve.command import add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", help="the main job on the bundled real model")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command in ("tune", "flywheel", "probe"):
        args.config_flags = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"tao-engine {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ModuleNotFoundError) as exc:  # a user's file, field, path, port or environment
        print(f"tao-engine {args.command}: error: {user_error_text(exc)}", file=sys.stderr)
        return 2


def user_error_text(exc: BaseException) -> str:
    """One line for a user's mistake: the message, with the file an OSError names."""
    if isinstance(exc, ModuleNotFoundError):
        return f"{exc}; install the package that provides {exc.name!r}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    text = " ".join(str(exc).split())  # one line, whatever the message held
    return text or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
