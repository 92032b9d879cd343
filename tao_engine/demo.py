"""`make demo`: TAO on the bundled SmolLM2-135M-Instruct, a few minutes on a 2-core CPU.

The task: short arithmetic questions, asked without their answers. The label-free reward is majority agreement of
each candidate's final number with its group (as TTRL does) plus a bonus for a concise answer; the model is tuned
with GRPO on LoRA adapters. Held-out questions WITH answers measure accuracy before and after, for monitoring only.
The prompts are generated here from a fixed seed, so the demo needs no data file.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from tao_engine.engine import EngineConfig, SamplingParams
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.lora import LoraConfig
from tao_engine.rl.optim import OptimConfig
from tao_engine.rl.tao_config import DataSection, RunSection, ScoringSection, TAOConfig, TrainSection

INSTRUCTION = "Answer with the number only."


def arithmetic_questions(count: int, seed: int) -> list[dict]:
    """Small sums and products as chat prompts; "answer" is kept for the eval file only."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        if rng.random() < 0.5:
            question, answer = f"What is {a} + {b}?", a + b
        else:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            question, answer = f"What is {a} times {b}?", a * b
        out.append({"messages": [{"role": "user", "content": f"{question} {INSTRUCTION}"}], "answer": str(answer)})
    return out


def demo_config(run_dir: Path, steps: int = 8) -> TAOConfig:
    # The prompt files sit beside the run directory, not in it: a run's directory holds only what the run writes,
    # so that `make demo` again may replace the previous run (tao_engine.rl.run_dir).
    data_dir = run_dir.with_name(run_dir.name + "-data")
    train_file, eval_file = data_dir / "prompts.jsonl", data_dir / "eval.jsonl"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Training prompts carry no answer: the tuner never sees a label.
    train_file.write_text("".join(json.dumps({"messages": q["messages"]}) + "\n" for q in arithmetic_questions(48, 1)))
    eval_file.write_text("".join(json.dumps(q) + "\n" for q in arithmetic_questions(24, 2)))
    return TAOConfig(
        data=DataSection(prompts=str(train_file), eval=str(eval_file), prompts_per_step=6),
        sampling=SamplingParams(n=6, temperature=1.0, top_p=1.0, max_tokens=24),
        scoring=ScoringSection(
            scorers=(
                {"name": "majority_vote", "weight": 1.0, "extractor": "last_number"},
                {"name": "length", "weight": 0.5, "max_length": 12},
            )
        ),
        algorithm=AlgorithmConfig(name="grpo"),
        optim=OptimConfig(warmup_steps=1),  # lr: the LoRA default (tao_engine.rl.optim.LORA_LR)
        lora=LoraConfig(r=16, alpha=32.0),
        # 6 prompts x 6 samples of 24 tokens: one micro-batch's activations are small, so no recompute is needed.
        train=TrainSection(max_tokens_per_forward=4096, gradient_checkpointing=False),
        engine=EngineConfig(max_num_seqs=64),
        run=RunSection(steps=steps, output_dir=str(run_dir), eval_extractor="last_number", seed=0),
    )


def run_demo(run_dir: str | Path = "runs/demo", steps: int = 8) -> int:
    from tao_engine.bundled import smollm2_dir
    from tao_engine.pretrained import load_pretrained
    from tao_engine.rl.tao import TAO

    start = time.perf_counter()
    model, tokenizer = load_pretrained(smollm2_dir(), dtype="float32")
    print(f"SmolLM2-135M-Instruct loaded ({time.perf_counter() - start:.1f}s)")
    config = demo_config(Path(run_dir), steps)
    tao = TAO(config, model=model, tokenizer=tokenizer)
    result = tao.run(overwrite=True)  # `make demo` again replaces the previous demo run
    first, last = result.history[0], result.history[-1]
    print(f"\nTAO, {config.algorithm.name} on LoRA r={config.lora.r}, {steps} steps of "
          f"{config.data.prompts_per_step} prompts x {config.sampling.n} samples, "
          f"{time.perf_counter() - start:.0f}s in all")
    print(f"label-free reward: step 1 {first['reward_mean']:.3f} -> step {steps} {last['reward_mean']:.3f}")
    for name, ev in (("before", result.eval_before), ("after", result.eval_after)):
        if ev:
            print(f"held-out eval {name}: accuracy {ev.get('accuracy', float('nan')):.3f}, score {ev['score']:.3f}")
    print(f"tuned model (adapters merged, base inference cost): {result.final_model_dir}")
    print(f"metrics: {Path(run_dir) / 'metrics.jsonl'}; plots: {', '.join(str(p) for p in result.plots) or 'none'}")
    return 0
