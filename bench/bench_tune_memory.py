"""Peak memory and time of a real TAO tune, phase by phase: SmolLM2-135M-Instruct with LoRA, n samples of
~180-token prompts (issue 23 items 3 and 8: a user's tune peaked at 11.6-15.7 GB and its first step took 371 s).

Runs `TAO(config).run()` in this process on synthetic prompts of `--prompt-tokens` tokens (a table schema and a
question, the shape of a text-to-SQL prompt) with the README's settings unless told otherwise, and reads the phases
from metrics.jsonl: `<phase>_s` and `<phase>_peak_mb` (peak resident memory of the process during the phase,
tao_engine.rl.step_monitor), plus the peak while the model loads. Prints a table per step and ends with one JSON line.

    OMP_NUM_THREADS=1 python bench/bench_tune_memory.py                 # 2 steps, n 8, 180-token prompts, eval on
    python bench/bench_tune_memory.py --steps 1 --no-eval --quick       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from common import machine, print_json_line, print_table  # noqa: E402

from tao_engine.rl.step_monitor import PeakMemory  # noqa: E402

COLUMNS = ("id", "customer", "product", "quantity", "price", "ordered_at", "region", "status", "discount", "channel")
TABLES = ("orders", "customers", "products", "shipments", "returns", "payments", "stores", "suppliers")


def prompt_text(rng: random.Random, tokenizer, target_tokens: int) -> str:
    """A schema-and-question prompt whose chat rendering has about `target_tokens` tokens."""
    lines = ["Write one SQLite query that answers the question. The database has these tables:"]
    question = (f"Question: what is the total {rng.choice(['price', 'quantity', 'discount'])} of the "
                f"{rng.choice(TABLES)} in {rng.choice(['March', 'April', 'May'])}, by region? Answer with the query.")
    while True:
        table = rng.choice(TABLES)
        cols = ", ".join(rng.sample(COLUMNS, 6))
        candidate = lines + [f"- {table}({cols})"]
        chat = [{"role": "user", "content": "\n".join([*candidate, question])}]
        if len(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)) > target_tokens:
            return "\n".join([*lines, question])
        lines = candidate


def build_config(root: Path, args, tokenizer) -> Path:
    rng = random.Random(0)
    prompts = [{"prompt": prompt_text(rng, tokenizer, args.prompt_tokens)} for _ in range(4 * args.prompts_per_step)]
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    evals = [{"prompt": prompt_text(rng, tokenizer, args.prompt_tokens), "answer": "0"} for _ in range(args.eval)]
    (root / "eval.jsonl").write_text("".join(json.dumps(p) + "\n" for p in evals))
    eval_line = f'eval = "{root / "eval.jsonl"}"\n' if args.eval else ""
    lora = "" if args.full else "[lora]\nr = 16\nalpha = 32.0\n"
    (root / "tao.toml").write_text(
        f'[model]\npath = "smollm2"\n'
        f'[data]\nprompts = "{root / "prompts.jsonl"}"\n{eval_line}prompts_per_step = {args.prompts_per_step}\n'
        f"[sampling]\nn = {args.n}\ntemperature = 1.0\nmax_tokens = {args.max_tokens}\n"
        f'[[scoring.scorers]]\nname = "majority_vote"\nextractor = "last_number"\n'
        f'[[scoring.scorers]]\nname = "length"\nmax_length = 400\nweight = 0.2\n'
        f'{lora}[run]\nsteps = {args.steps}\noutput_dir = "{root / "run"}"\n'
        f"[probe]\nbefore_tune = {'true' if args.probe else 'false'}\nprompts = 8\n"
        + "".join(f"{line}\n" for line in args.set)
    )
    return root / "tao.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=180)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--eval", type=int, default=8, help="eval prompts (0: no eval)")
    parser.add_argument("--probe", action="store_true", help="run the readiness probe first (tune's default)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--set", action="append", default=[], help="extra TOML lines, e.g. '[engine]' ...")
    parser.add_argument("--quick", action="store_true", help="1 step, n 4, 2 prompts, 16 new tokens")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.n, args.prompts_per_step, args.max_tokens, args.eval = 1, 4, 2, 16, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from tao_engine.bundled import smollm2_dir
    from tao_engine.pretrained import load_pretrained
    from tao_engine.rl.tao import TAO
    from tao_engine.rl.tao_config import TAOConfig

    memory = PeakMemory()
    memory.reset()
    start = time.perf_counter()
    model, tokenizer = load_pretrained(smollm2_dir(), dtype="float32")
    load = {"phase": "load model", "seconds": time.perf_counter() - start, "peak_mb": memory.peak_mb()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = TAOConfig.from_toml(build_config(root, args, tokenizer))
        start = time.perf_counter()
        result = TAO(config, model=model, tokenizer=tokenizer, progress=False).run()
        wall = time.perf_counter() - start
        # Since the last phase began (the eval after the steps, when there is one): the eval and final/ writing.
        after = {"phase": "eval after + final/", "seconds": None, "peak_mb": memory.peak_mb()}
        steps = [r for r in result.history if "step_s" in r]
    rows = [load]
    for record in steps:
        for phase in ("generate", "score", "update", "eval", "holdout"):
            key = "train_s" if phase == "update" else f"{phase}_s"
            if key in record:
                rows.append({"phase": f"step {record['step']} {phase}", "seconds": record[key],
                             "peak_mb": record[f"{phase}_peak_mb"]})
        rows.append({"phase": f"step {record['step']} (whole)", "seconds": record["step_s"],
                     "peak_mb": record["peak_memory_mb"]})
    rows.append(after)
    print(f"SmolLM2-135M {'full' if args.full else 'LoRA r16'}, {args.prompts_per_step} prompts x n {args.n}, "
          f"~{args.prompt_tokens}-token prompts, max_tokens {args.max_tokens}; {machine()}")
    print_table(rows)
    peak = max(r["peak_mb"] for r in rows)
    print(f"peak resident memory: {peak:.0f} MiB; tune wall time {wall:.0f} s")
    results = [{"peak_mb": peak, "wall_s": wall, "step_s": [r["step_s"] for r in steps],
                "phases": {r["phase"]: {"s": None if r["seconds"] is None else round(r["seconds"], 2),
                                        "mb": round(r["peak_mb"])} for r in rows},
                "config": {k: getattr(args, k) for k in ("steps", "n", "prompts_per_step", "prompt_tokens",
                                                         "max_tokens", "eval", "probe", "full")}}]
    print_json_line("tune_memory", results, {})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
