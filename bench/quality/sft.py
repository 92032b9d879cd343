"""Supervised fine-tuning on the gold labels: the baseline TAO has to match without them.

Each step takes the same number of training questions as a TAO step and trains on one gold completion per question
(`Task.gold_completion`, under the same chat prompt), with the trainer's "bon_sft" loss: the token-mean negative
log-likelihood of each group's best completion, here the only one. Same LoRA, optimizer, schedule and number of
optimizer steps as TAO (`quality.tuning.tuning_config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.quality.profiles import Profile
from bench.quality.records import Example
from bench.quality.tasks import Task
from bench.quality.tuning import build_tao, run_steps, train_stats, tuning_config
from tao_engine.engine.prompts import encode_prompt
from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.rl.rollouts import Rollouts, RolloutTiming
from tao_engine.rl.trainer import train_step


def gold_rollouts(tokenizer: Any, task: Task, examples: Sequence[Example], sampling: SamplingParams) -> Rollouts:
    """A one-sample-per-prompt batch whose completion is the gold answer followed by EOS; reward 1 (the best)."""
    eos = tokenizer.eos_token_id
    prompt_texts, prompt_ids, completions, texts = [], [], [], []
    for i, ex in enumerate(examples):
        text, ids = encode_prompt(ex.record.prompt, tokenizer, index=i)
        gold = task.gold_completion(ex.gold)
        prompt_texts.append(text)
        prompt_ids.append(ids)
        completions.append([tokenizer.encode(gold, add_special_tokens=False) + ([eos] if eos is not None else [])])
        texts.append([gold])
    zeros = [[[0.0] * len(c) for c in group] for group in completions]  # no sampler: log-probs unused by bon_sft
    return Rollouts(
        prompts=[ex.record.prompt for ex in examples], prompt_texts=prompt_texts, prompt_token_ids=prompt_ids,
        completion_token_ids=completions, completion_texts=texts, sampler_logprobs=zeros, raw_logprobs=zeros,
        finish_reasons=[["stop"] for _ in examples], sampling=sampling,
        timing=RolloutTiming(0.0, sum(map(len, prompt_ids)), sum(len(g[0]) for g in completions)),
        prompt_indices=list(range(len(examples))), rewards=[[1.0] for _ in examples],
    )


def run_sft(model: Any, tokenizer: Any, task: Task, train: Sequence[Example], test: Sequence[Example],
            profile: Profile, seed: int, run_dir: str, scorer: Any) -> dict[str, Any]:
    """scorer: the task's label-free scorer; the TAO object needs one, SFT never calls it."""
    config = tuning_config(profile, task, "bon_sft", n=1, seed=seed, run_dir=run_dir)
    tao = build_tao(config, model, tokenizer, scorer)
    sampling = SamplingParams(n=1, temperature=1.0, max_tokens=profile.max_tokens[task.name])

    def step(_: int, chosen: Sequence[Example]) -> dict[str, Any]:
        batch = gold_rollouts(tokenizer, task, chosen, sampling)
        stats = train_step(tao.model, batch, tao.optimizer, tao.train_config, tao.reference, tao.lr_scheduler)
        return train_stats(stats)

    return run_steps(tao, task, train, test, profile, seed, step, curve=True)
