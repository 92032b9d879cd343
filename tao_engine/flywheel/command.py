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

from tao_engine.cli_flags import DataclassFlags
from tao_engine.flywheel.loop import FlywheelConfig
from tao_engine.serve.command import API_KEY_ENV  # serve's key: the flywheel reloads that server

FLYWHEEL = DataclassFlags(FlywheelConfig, ("table", "every", "poll_s", "max_rounds", "max_prompts", "reload_url",
                                           "api_key"))


def add_flywheel_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="TAO config TOML (run.output_dir holds round-<k>/ and rounds.json)")
    FLYWHEEL.add_to(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")
    p.epilog = f"--api-key not given: ${API_KEY_ENV} when set; --reload-url needs the server's --enable-reload"


def run_flywheel_command(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from tao_engine.flywheel.loop import run_flywheel
    from tao_engine.flywheel.reload_client import ReloadError
    from tao_engine.output_paths import check_output_dir
    from tao_engine.rl.tao_config import load_tao_config

    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tao_config = load_tao_config(args.config, extra)
    check_output_dir(tao_config.run.output_dir, "[run] output_dir")  # before waiting hours for the first round
    config = FLYWHEEL.build(args, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None)

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
