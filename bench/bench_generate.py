"""End-to-end generation on SmolLM2-135M-Instruct: tao_engine's Engine against HF transformers `generate` and
llama.cpp (llama-cpp-python, optional `bench` extra), in the same run.

Workload (issue 3): 8 chat prompts x n=8 samples, at most 64 new tokens, temperature 0.7, top-p 0.9.
Reports generated tokens/s for each provider, the machine's measured matmul FLOP/s and the fraction of it the
engine reaches, prefill and decode throughput separately, and the KV memory saved by sharing prompt blocks.
Every provider runs in its own child process (bench/isolated.py), one after another: a peer that crashes, hangs or
is not installed is a row saying so ("crashed: signal 11 (SIGSEGV)"), and the rest of the run completes.
--profile adds the breakdown of one decode step at full batch (bench/generate_profile.py) and `decode_gemm_share`
(GEMM time replayed alone / step time) to the JSON line. --compile-decode adds a row for the engine with its decode
forward through torch.compile (EngineConfig.compile_decode), its compile time in "warm-up s"; --unpacked one with
the modules' own weights (EngineConfig.pack_linears=False) instead of the packed copy the default may use.

Run: .venv/bin/python bench/bench_generate.py [--prompts 8] [--n 8] [--max-tokens 64] [--dtype auto]
     [--profile [--profile-steps 5]] [--skip-peers] [--peer-timeout 900] [--threads N] [--compile-decode]
     [--unpacked]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_json_line, print_table  # noqa: E402
from isolated import report_missing, report_result, run_child  # noqa: E402

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
PROVIDERS = ("tao_engine", "tao_engine_compiled", "tao_engine_unpacked", "transformers", "llama.cpp")
COMPILED = "tao_engine (compiled decode)"
UNPACKED = "tao_engine (unpacked linears)"
# The engine's variants: provider -> (row name, EngineConfig overrides)
ENGINE_VARIANTS = {
    "tao_engine": ("tao_engine", {}),
    "tao_engine_compiled": (COMPILED, {"compile_decode": True}),
    "tao_engine_unpacked": (UNPACKED, {"pack_linears": False}),
}


def matmul_flops(dtype: torch.dtype, size: int = 1024, reps: int = 5) -> float:
    """Measured FLOP/s of one square matmul on this machine: the floor the engine is compared against."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start)


def cpu_description() -> dict[str, object]:
    """The CPU model and the ISA flags that decide kernel speed here (AVX2, AVX-512, bf16, AMX)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def bench_engine(model_dir: Path, prompts, args, variant: str = "tao_engine") -> dict:
    from tao_engine.engine import Engine, EngineConfig, SamplingParams

    name, overrides = ENGINE_VARIANTS[variant]
    engine = Engine(model_dir, EngineConfig(dtype=args.dtype, **overrides))
    sampling = SamplingParams(n=args.n, temperature=0.7, top_p=0.9, max_tokens=args.max_tokens, seed=0)
    start = time.perf_counter()
    engine.generate(prompts[:1], SamplingParams(n=2, max_tokens=4, seed=0))  # warm-up (and the compile)
    warmup = time.perf_counter() - start
    engine.reset_stats()
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling)
    elapsed = time.perf_counter() - start
    generated = sum(len(s.token_ids) for o in outputs for s in o.samples)
    row = {"provider": name, "seconds": elapsed, "generated": generated, "tok/s": generated / elapsed,
           "warm-up s": warmup, "packed linears": engine.packing.reason if engine.packing.enabled else "no: "
           + engine.packing.reason, **engine.stats()}
    if args.profile and variant == "tao_engine":  # the breakdown of the default engine (inductor fuses ops away)
        from generate_profile import profile_decode

        profile_sampling = SamplingParams(n=args.n, temperature=0.7, top_p=0.9, max_tokens=args.max_tokens, seed=1,
                                          ignore_eos=True)
        row["profile"] = profile_decode(engine, prompts, profile_sampling, args.profile_steps)
    return row


def bench_transformers(model_dir: Path, prompts, args) -> dict:
    try:
        import transformers
    except ImportError:
        report_missing("transformers is not installed (pip install transformers)")

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


def bench_llama_cpp(gguf: Path, prompts, args) -> dict:
    try:
        from llama_cpp import Llama
    except ImportError:
        report_missing("llama-cpp-python is not installed (pip install 'tao-engine[bench]')")
    llm = Llama(model_path=str(gguf), n_threads=torch.get_num_threads(), n_ctx=1024, verbose=False, seed=0)
    generated = 0
    start = time.perf_counter()
    for p in prompts:
        for _ in range(args.n):
            out = llm.create_chat_completion(p, max_tokens=args.max_tokens, temperature=0.7, top_p=0.9)
            generated += out["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - start
    return {"provider": f"llama.cpp ({torch.get_num_threads()} threads, sequential)", "seconds": elapsed,
            "generated": generated, "tok/s": generated / elapsed}


def _child(args: argparse.Namespace, prompts) -> None:
    if args.child in ENGINE_VARIANTS:
        report_result(bench_engine(Path(args.model_dir), prompts, args, args.child))
    elif args.child == "transformers":
        report_result(bench_transformers(Path(args.model_dir), prompts, args))
    else:
        report_result(bench_llama_cpp(Path(args.gguf), prompts, args))


def _child_cmd(args: argparse.Namespace, provider: str, model_dir: Path, gguf: Path) -> list[str]:
    cmd = [sys.executable, __file__, "--child", provider, "--model-dir", str(model_dir), "--gguf", str(gguf),
           "--prompts", str(args.prompts), "--n", str(args.n), "--max-tokens", str(args.max_tokens),
           "--dtype", args.dtype, "--profile-steps", str(args.profile_steps)]
    return cmd + (["--profile"] if args.profile else []) + ([f"--threads={args.threads}"] if args.threads else [])


def _print_profile(profile: dict) -> None:
    p = profile
    print(f"\ndecode step at batch {p['batch']} ({p['steps']} rounds of a plain step, then its GEMMs replayed alone; "
          f"categories from as many profiled steps): step {p['step_ms']:.1f} ms, GEMMs alone {p['gemm_replay_ms']:.1f} "
          f"ms; decode_gemm_share {p['decode_gemm_share']:.2f} (median per round): the step = "
          f"{p['step_over_gemm']:.2f}x its GEMMs")
    print_table(profile["table"])
    print("GEMM shapes of one step (time of each inside the profiled steps):")
    print_table(profile["gemm_shapes"])
    print("largest small ops:")
    print_table(profile["top_small_ops"])


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the engine's dtype; auto: bf16 where the CPU has native bf16, else float32")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--profile", action="store_true", help="break one decode step down (generate_profile.py)")
    parser.add_argument("--profile-steps", type=int, default=5, help="decode steps timed, and as many profiled")
    parser.add_argument("--peer-timeout", type=float, default=900.0, help="seconds before a provider counts as hung")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every provider")
    parser.add_argument("--compile-decode", action="store_true",
                        help="also run the engine with EngineConfig(compile_decode=True) (torch.compile of decode)")
    parser.add_argument("--unpacked", action="store_true",
                        help="also run the engine with EngineConfig(pack_linears=False) (the modules' own weights)")
    parser.add_argument("--child", choices=PROVIDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = _parse()
    from tao_engine.precision import choose_dtype

    choice = choose_dtype("cpu")
    if args.dtype == "auto":
        args.dtype = choice.name
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    if args.child is not None:
        return _child(args, prompts)

    from tao_engine.bundled import smollm2_gguf_path
    from tao_engine.gguf_import import import_gguf

    floor = matmul_flops(getattr(torch, args.dtype))
    providers = ["tao_engine"] + (["tao_engine_compiled"] if args.compile_decode else [])
    providers += ["tao_engine_unpacked"] if args.unpacked else []
    providers += [] if args.skip_peers else ["transformers", "llama.cpp"]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = import_gguf(smollm2_gguf_path(), Path(tmp) / "smollm2")
        for provider in providers:
            outcome = run_child(_child_cmd(args, provider, model_dir, smollm2_gguf_path()), args.peer_timeout)
            rows.append({"provider": provider, **(outcome.result or {}), "status": outcome.status})
    ours = rows[0]
    profile = ours.pop("profile", None)
    params = ours.pop("params", None)
    why = choice.reason if args.dtype == choice.name else "as asked"
    print(f"CPU: {cpu_description()}; engine dtype {args.dtype} ({why})")
    print(f"matmul floor ({args.dtype}, 1024^3): {floor / 1e9:.1f} GFLOP/s")
    if params and ours["status"] == "ok":
        achieved = 2 * params * (ours["prefill_tokens"] + ours["decode_tokens"]) / ours["seconds"]
        print(f"engine: {achieved / 1e9:.1f} GFLOP/s of model matmuls = {achieved / floor:.1%} of the floor")
    table = [{k: r.get(k, "-") for k in ("provider", "status", "seconds", "generated", "tok/s", "decode_tok/s",
                                         "warm-up s")} for r in rows]
    print_table(table)
    if ours["status"] == "ok":
        print(
            f"engine prefill {ours['prefill_tok/s']:.1f} tok/s, decode {ours['decode_tok/s']:.1f} tok/s; "
            f"KV blocks saved by sharing prompt blocks: {ours['kv_blocks_saved']} "
            f"({ours['kv_bytes_saved'] / 2**20:.1f} MiB)"
        )
        print(f"engine linears packed: {ours['packed linears']} ({ours['packed_weight_bytes'] / 2**20:.0f} MiB)")
    ratios: dict[str, object] = {}
    for r in rows[1:]:
        if r["provider"] in (COMPILED, UNPACKED):
            if r["status"] == "ok" and ours["status"] == "ok":
                key = "compiled_decode_speedup" if r["provider"] == COMPILED else "unpacked_over_default"
                ratios[f"{key} (decode tok/s)"] = r["decode_tok/s"] / ours["decode_tok/s"]
            continue
        ok = ours["status"] == "ok" and r["status"] == "ok"
        ratios[f"speedup_vs_{r['provider']}"] = ours["tok/s"] / r["tok/s"] if ok else r["status"]
    if profile is not None:
        _print_profile(profile)
        ratios["decode_gemm_share"] = profile["decode_gemm_share"]
        ratios["decode_step_over_gemm"] = profile["step_over_gemm"]
        ours["profile"] = {k: profile[k] for k in ("batch", "step_ms", "gemm_replay_ms", "category_shares")}
    ours["cpu"] = cpu_description()
    print_json_line("generate", rows, ratios)


if __name__ == "__main__":
    main()
