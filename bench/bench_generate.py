"""End-to-end generation on SmolLM2-135M-Instruct: tao_engine's Engine against HF transformers `generate` and
llama.cpp (llama-cpp-python, optional `bench` extra), in the same run.

Workload (issue 3): 8 chat prompts x n=8 samples, at most 64 new tokens, temperature 0.7, top-p 0.9.
Reports generated tokens/s for each provider, the machine's measured matmul FLOP/s and the fraction of it the
engine reaches, prefill and decode throughput separately, and the KV memory saved by sharing prompt blocks.
Run: .venv/bin/python bench/bench_generate.py [--prompts 8] [--n 8] [--max-tokens 64] [--dtype float32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Write a SQL query that returns the ten most recent orders.",
    "Explain what a hash table is in two sentences.",
    "Give me three tips for writing clear Python code.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish and German.",
    "What is 17 times 23? Show your work.",
    "Summarize the plot of Romeo and Juliet in one sentence.",
]


def matmul_flops(dtype: torch.dtype, size: int = 1024, reps: int = 5) -> float:
    """Measured FLOP/s of one square matmul on this machine: the floor the engine is compared against."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start)


def bench_engine(model_dir: Path, prompts, args) -> dict:
    from tao_engine.engine import Engine, EngineConfig, SamplingParams

    engine = Engine(model_dir, EngineConfig(dtype=args.dtype))
    sampling = SamplingParams(n=args.n, temperature=0.7, top_p=0.9, max_tokens=args.max_tokens, seed=0)
    engine.generate(prompts[:1], SamplingParams(n=2, max_tokens=4, seed=0))  # warm-up
    engine.reset_stats()
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling)
    elapsed = time.perf_counter() - start
    generated = sum(len(s.token_ids) for o in outputs for s in o.samples)
    stats = engine.stats()
    return {"provider": "tao_engine", "seconds": elapsed, "generated": generated, "tok/s": generated / elapsed,
            **stats}


def bench_transformers(model_dir: Path, prompts, args) -> dict:
    import transformers

    best = None
    for dtype in (torch.float32, torch.bfloat16):
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        tok.padding_side = "left"
        texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=args.max_tokens,
                                 num_return_sequences=args.n, pad_token_id=tok.pad_token_id)
        elapsed = time.perf_counter() - start
        new = out[:, enc["input_ids"].shape[1]:]  # [B*n, T]; rows that ended early are padded after their EOS
        generated = sum(_generated_length(row, tok.eos_token_id) for row in new.tolist())
        row = {"provider": f"transformers ({str(dtype).removeprefix('torch.')})", "seconds": elapsed,
               "generated": generated, "tok/s": generated / elapsed}
        if best is None or row["tok/s"] > best["tok/s"]:
            best = row
    return best


def _generated_length(row: list[int], eos: int) -> int:
    """Tokens a sample really generated: up to and including its first EOS (the rest is batch padding)."""
    return row.index(eos) + 1 if eos in row else len(row)


def bench_llama_cpp(gguf: Path, prompts, args) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed (pip install 'tao-engine[bench]'): skipping the llama.cpp peer")
        return None
    llm = Llama(model_path=str(gguf), n_threads=2, n_ctx=1024, verbose=False, seed=0)
    generated = 0
    start = time.perf_counter()
    for p in prompts:
        for _ in range(args.n):
            out = llm.create_chat_completion(p, max_tokens=args.max_tokens, temperature=0.7, top_p=0.9)
            generated += out["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - start
    return {"provider": "llama.cpp (2 threads, sequential)", "seconds": elapsed, "generated": generated,
            "tok/s": generated / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()

    from tao_engine.bundled import smollm2_gguf_path
    from tao_engine.gguf_import import import_gguf

    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    floor = matmul_flops(getattr(torch, args.dtype))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = import_gguf(smollm2_gguf_path(), Path(tmp) / "smollm2")
        rows = [bench_engine(model_dir, prompts, args)]
        if not args.skip_peers:
            rows.append(bench_transformers(model_dir, prompts, args))
            llama = bench_llama_cpp(smollm2_gguf_path(), prompts, args)
            if llama is not None:
                rows.append(llama)
    ours = rows[0]
    params = ours.pop("params", None)
    print(f"matmul floor ({args.dtype}, 1024^3): {floor / 1e9:.1f} GFLOP/s")
    if params:
        achieved = 2 * params * (ours["prefill_tokens"] + ours["decode_tokens"]) / ours["seconds"]
        print(f"engine: {achieved / 1e9:.1f} GFLOP/s of model matmuls = {achieved / floor:.1%} of the floor")
    table = [{k: r.get(k) for k in ("provider", "seconds", "generated", "tok/s")} for r in rows]
    print_table(table)
    print(
        f"engine prefill {ours.get('prefill_tok/s', 0):.1f} tok/s, decode {ours.get('decode_tok/s', 0):.1f} tok/s; "
        f"KV blocks saved by sharing prompt blocks: {ours.get('kv_blocks_saved', 0)} "
        f"({ours.get('kv_bytes_saved', 0) / 2**20:.1f} MiB)"
    )
    ratios = {f"speedup_vs_{r['provider']}": ours["tok/s"] / r["tok/s"] for r in rows[1:]}
    print_json_line("generate", rows, ratios)


if __name__ == "__main__":
    main()
