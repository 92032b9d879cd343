"""`tao-engine tune --config tao.toml [--section.field value ...] [--resume]`: a TAO run from the command line.

Every config field is also a flag: `--optim.lr 1e-5`, `--algorithm.name dapo`, `--sampling.n 16`, `--run.steps 50`
(values in TOML syntax; bare words are strings). Flags override the file; without --config the defaults apply.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def split_overrides(extra: Sequence[str]) -> list[str]:
    """`--a.b value` / `--a.b=value` pairs -> ["a.b=value", ...]; anything else is an error naming it."""
    out: list[str] = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=", 1)[0]:
            raise ValueError(f"tune: unexpected argument {item!r}; config flags look like --section.field value")
        key = item[2:]
        if "=" in key:
            out.append(key)
            i += 1
            continue
        if i + 1 >= len(extra):
            raise ValueError(f"tune: flag {item} needs a value")
        out.append(f"{key}={extra[i + 1]}")
        i += 2
    return out


def run_tune(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from tao_engine.rl.tao import TAO
    from tao_engine.rl.tao_config import TAOConfig, apply_overrides

    overrides = split_overrides(extra)
    if args.config:
        config = TAOConfig.from_toml(args.config, overrides)
    else:
        config = TAOConfig.from_dict(apply_overrides({}, overrides))
    result = TAO(config, progress=not args.quiet).run(resume=args.resume)
    last = result.history[-1] if result.history else {}
    summary = {
        "run_dir": str(result.run_dir),
        "final_model": str(result.final_model_dir),
        "steps": result.steps,
        "reward_first": result.history[0].get("reward_mean") if result.history else None,
        "reward_last": last.get("reward_mean"),
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
        "plots": [str(p) for p in result.plots],
    }
    print(json.dumps(summary, indent=2))
    return 0
