"""Prefill forward of SmolLM2-135M-Instruct: tao_engine's decoder vs transformers' LlamaForCausalLM, same weights.

Both run the same padded batch in inference mode; tao_engine packs the tokens (no padding compute).
Reports tokens/s and the achieved FLOP/s against the model's 2 * params * tokens matmul floor.
Run: .venv/bin/python bench/bench_forward.py [--batch 4] [--seq 128] [--dtype float32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table, time_call  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    import transformers

    from tao_engine import load_pretrained
    from tao_engine.bundled import smollm2_gguf_path
    from tao_engine.gguf_import import import_gguf

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = import_gguf(smollm2_gguf_path(), Path(tmp) / "smollm2")
        ours, _ = load_pretrained(model_dir, dtype=dtype)
        hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype).eval()

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, ours.config.vocab_size, (args.batch, args.seq), generator=g)
    tokens = ids.numel()
    params = sum(p.numel() for p in ours.parameters() if p is not ours.model.embed_tokens.weight)
    flops = 2 * params * tokens

    with torch.inference_mode():
        t_ours = time_call(lambda: ours.forward_padded(ids), reps=args.reps)
        t_hf = time_call(lambda: hf(ids).logits, reps=args.reps)
    rows = [
        {"provider": name, "batch": args.batch, "seq": args.seq, "dtype": args.dtype, "ms": t * 1e3,
         "tok/s": tokens / t, "GFLOP/s": flops / t / 1e9}
        for name, t in (("tao_engine", t_ours), ("transformers", t_hf))
    ]
    print_table(rows)
    print_json_line("forward", rows, {"tao_engine_speedup_vs_transformers": t_hf / t_ours})


if __name__ == "__main__":
    main()
