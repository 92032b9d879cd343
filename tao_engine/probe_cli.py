"""`tao-engine probe --config tao.toml [--section.field value ...] [--output report.json]`: the readiness probe on
the run a config describes, before any tuning compute is spent (tao_engine.rl.readiness).

It builds the run as `tune` would (model, LoRA, engine, exploration, scorers), samples `[probe] prompts` of the
prompts with the run's generation settings, scores them and prints the statistics and the verdict (go / weak /
no-go, each reason with its fix). With `--probe.labeled FILE` (prompts with their "answer") it adds pass@k, maj@k
and the reward's pair accuracy. Exit code 0 for go or weak, 3 for no-go, 2 for a user error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

NO_GO_EXIT = 3


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="the TOML file tune would read; every field is also a "
                        "--section.field flag ([probe] prompts, labeled; [sampling] n, temperature, ...)")
    parser.add_argument("--output", default=None, metavar="FILE", help="also write the report as JSON here")


def run_probe_command(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from tao_engine.rl.readiness.verdict import NO_GO
    from tao_engine.rl.tao import TAO
    from tao_engine.rl.tao_config import load_tao_config

    config = load_tao_config(args.config, extra)
    output = Path(args.output) if args.output else None
    if output is not None and output.is_dir():
        raise ValueError(f"--output {output} is a directory; give a file path for the JSON report")
    tao = TAO(config, progress=False)
    print(f"tao-engine probe: {tao.prompt_rendering}", file=sys.stderr)
    report = tao.probe()
    print(report.text())
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report.to_json() + "\n", encoding="utf-8")
        print(f"report written to {output}", file=sys.stderr)
    return NO_GO_EXIT if report.verdict.level == NO_GO else 0
