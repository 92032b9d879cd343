"""The two sides of bench_tao_step.py, each run in its own child process: `run_tao` (tao_engine's library API) and
`run_trl` (TRL's GRPOTrainer). Both return per-step wall times (the first step is the warm-up) and peak memory.

Shared settings: SmolLM2-135M-Instruct in the bench's dtype ("auto" resolved by tao_engine.precision: bf16 weights
with fp32 master weights on tao_engine's side and TRL with bf16=True where the CPU computes bf16 natively, float32
for both elsewhere), full fine-tuning, AdamW (lr 1e-5, no weight decay, constant LR), grad
norm clipped at 1, GRPO (group mean/std advantages, per-sequence token mean, clip 0.2), beta 0 (no reference model),
temperature 1, at most `max_tokens` completion tokens, one optimizer step per rollout batch, the same reward.
With `tokens_per_backward` B > 0 both sides backpropagate at most about B tokens at a time and accumulate gradients
over the batch (tao_engine: its token budget per forward, packing whole prompt groups, at least one; TRL:
per_device_train_batch_size = the sequences of prompt + max_tokens that fit B, at least one, with gradient
accumulation, still generating the whole batch once per optimizer step); B = 0 is the whole batch at once.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tao_step_setup import reset_peak_rss, resident_kib

LR = 1e-5
SEED = 0


def _memory(rss_loaded_kib: int, load_peak_kib: int) -> dict[str, float]:
    step_peak = resident_kib("VmHWM")
    return {
        "peak_mib": max(load_peak_kib, step_peak) / 1024,  # whole process, model loading included
        "step_peak_mib": (step_peak - rss_loaded_kib) / 1024,  # growth over the loaded model during the steps
    }


def _dtype_name(args: Any) -> str:
    from tao_engine.precision import resolve_dtype_name

    return resolve_dtype_name(args.dtype, "cpu")


def _kv_budget(model: Any, tokenizer: Any, prompts: list[Any], args: Any, block_size: int = 16) -> int:
    """KV bytes for one step's batch with a 25% margin: each prompt's blocks once (its n samples share them through
    the prefix cache) plus each sample's completion blocks and a copy of the prompt's last, partial block. The
    engine's default (2 GiB on CPU) would dwarf SmolLM2's needs and count, all of it, in the peak resident set."""
    from tao_engine.engine.kv_allocation import kv_cache_bytes_per_block

    longest = _longest_prompt(tokenizer, prompts)
    blocks = args.prompts * (longest // block_size + 2) + args.prompts * args.n * (args.max_tokens // block_size + 2)
    dtype = next(model.parameters()).dtype
    return blocks * 5 // 4 * kv_cache_bytes_per_block(model.config, block_size, dtype)


def _longest_prompt(tokenizer: Any, prompts: list[Any]) -> int:
    return max(len(tokenizer.encode(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False),
                                    add_special_tokens=False)) for p in prompts)


def run_tao(prompts: list[Any], args: Any) -> dict[str, Any]:
    from tao_engine.bundled import smollm2_dir
    from tao_engine.engine import Engine, EngineConfig, SamplingParams
    from tao_engine.pretrained import load_pretrained
    from tao_engine.rl import AlgorithmConfig, TrainConfig, rollout, score, train_step
    from tao_engine.rl.optim import OptimConfig, build_optimizer
    from tao_engine.scoring import build_composite

    torch.manual_seed(SEED)
    dtype = _dtype_name(args)
    model, tokenizer = load_pretrained(smollm2_dir(), dtype=dtype)
    config = EngineConfig(seed=SEED, kv_cache_bytes=_kv_budget(model, tokenizer, prompts, args))
    engine = Engine(model, config, tokenizer=tokenizer)  # samples from `model` itself
    scorer = build_composite([{"name": "tao_step_setup:tao_concise_reward"}])
    # build_optimizer: fp32 master weights for a bf16 model (a plain AdamW on bf16 weights would round lr 1e-5 away)
    optimizer = build_optimizer(model, OptimConfig(lr=LR, weight_decay=0.0, max_grad_norm=1.0))
    budget = {"max_tokens_per_forward": args.tokens_per_backward} if args.tokens_per_backward else {}
    train_config = TrainConfig(AlgorithmConfig(name="grpo", kl_coef=0.0), max_grad_norm=1.0, seed=SEED, **budget)
    sampling = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens)
    load_peak, rss_loaded = resident_kib("VmHWM"), resident_kib("VmRSS")
    reset_peak_rss()
    steps: list[dict[str, float]] = []
    for step in range(args.steps + 1):
        batch_prompts = prompts[step * args.prompts:(step + 1) * args.prompts]
        t0 = time.perf_counter()
        batch = rollout(engine, batch_prompts, sampling)
        t1 = time.perf_counter()
        batch = score(batch, scorer)
        t2 = time.perf_counter()
        stats = train_step(model, batch, optimizer, train_config)
        t3 = time.perf_counter()
        tokens = sum(len(c) for group in batch.completion_token_ids for c in group)
        steps.append({"generate_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2, "total_s": t3 - t0,
                      "completion_tokens": tokens, "prompt_tokens": sum(map(len, batch.prompt_token_ids)),
                      "reward_mean": stats.as_dict().get("reward_mean", float("nan"))})
    return {"steps": steps, "dtype": dtype, **_memory(rss_loaded, load_peak)}


def run_trl(prompts: list[Any], args: Any) -> dict[str, Any]:
    from datasets import Dataset
    from tao_step_setup import trl_concise_reward
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tao_engine.bundled import smollm2_dir

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step: generation, reward, log-probs, loss and update all fall inside."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    torch.manual_seed(SEED)
    path = str(smollm2_dir())
    bf16 = _dtype_name(args) == "bfloat16"  # TRL's mixed precision: fp32 weights, bf16 autocast
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = args.prompts * args.n
    per_backward = batch
    if args.tokens_per_backward:  # the largest divisor of the batch whose padded sequences fit the budget
        sequence = _longest_prompt(tokenizer, prompts) + args.max_tokens
        per_backward = max(d for d in range(1, batch + 1) if batch % d == 0 and d * sequence <= max(
            sequence, args.tokens_per_backward))
    accumulation = batch // per_backward  # micro-batches; the whole batch is generated once per optimizer step
    config = GRPOConfig(
        output_dir=args.trl_output_dir, use_cpu=True, bf16=bf16, seed=SEED, report_to="none", save_strategy="no",
        logging_steps=1, disable_tqdm=True, max_steps=args.steps + 1, shuffle_dataset=False,
        per_device_train_batch_size=per_backward, gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation, num_generations=args.n,
        max_completion_length=args.max_tokens, temperature=1.0, top_k=0, top_p=1.0, beta=0.0, loss_type="grpo",
        scale_rewards="group", num_iterations=1, epsilon=0.2, learning_rate=LR, weight_decay=0.0,
        lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", max_grad_norm=1.0,
        gradient_checkpointing=False,  # TRL's fastest setting on this model (its default, True, recomputes)
    )  # fmt: skip
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=trl_concise_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    load_peak, rss_loaded = resident_kib("VmHWM"), resident_kib("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start  # checks that the timed steps cover the run (generation included)
    steps = [{"total_s": s} for s in timer.seconds]
    return {"steps": steps, "train_wall_s": wall, "dtype": "bfloat16 autocast" if bf16 else "float32",
            **_memory(rss_loaded, load_peak)}
