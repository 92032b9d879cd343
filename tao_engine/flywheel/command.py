"""`tao-engine flywheel --table infer.sqlite --config tao.toml [--every N] [--poll-s S] [--max-rounds K]
[--reload-url URL --api-key K] [--section.field value ...]`: train a round whenever N new prompts arrived, then have
the server reload the new model. One JSON line per round on stdout."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict

API_KEY_ENV = "TAO_ENGINE_API_KEY"  # the variable `serve` reads its key from


def add_flywheel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", required=True, help="the SQLite inference table `serve --table` writes")
    p.add_argument("--config", default=None, help="TAO config TOML (run.output_dir holds round-<k>/ and rounds.json)")
    p.add_argument("--every", type=int, default=64, help="run a round once this many new unused prompts arrived")
    p.add_argument("--poll-s", type=float, default=30.0, help="seconds between looks at the table")
    p.add_argument("--max-rounds", type=int, default=None, help="stop after this many rounds (default: never)")
    p.add_argument("--max-prompts", type=int, default=None, help="prompts one round takes at most (default: all)")
    p.add_argument("--reload-url", default=None, help="the server to reload after each round, e.g. "
                   "http://127.0.0.1:8000 (it needs --enable-reload)")
    p.add_argument("--api-key", default=None, help=f"the server's API key (default: ${API_KEY_ENV})")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")


def run_flywheel_command(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from tao_engine.flywheel.loop import FlywheelConfig, run_flywheel
    from tao_engine.flywheel.reload_client import ReloadError
    from tao_engine.output_paths import check_output_dir
    from tao_engine.rl.tao_config import load_tao_config

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tao_config = load_tao_config(args.config, extra)
    check_output_dir(tao_config.run.output_dir, "[run] output_dir")  # before waiting hours for the first round
    config = FlywheelConfig(
        table=args.table, every=args.every, poll_s=args.poll_s, max_rounds=args.max_rounds,
        max_prompts=args.max_prompts, reload_url=args.reload_url,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
    )

    def report(record, version) -> None:
        print(json.dumps({**asdict(record), "served_model_version": version}), flush=True)

    try:
        run_flywheel(tao_config, config, on_round=report)
    except ReloadError as exc:
        print(f"tao-engine flywheel: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tao-engine flywheel: stopped", file=sys.stderr)
    return 0
