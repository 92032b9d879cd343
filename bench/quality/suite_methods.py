"""What each quality-suite cell does, on a fresh base model. Every tuned method goes through the library as a user
would: `TAO(config).run(prompts)` for TAO, best-of-N SFT and multi-task TAO (the guards, the held-out label-free
score and the best-checkpoint choice all inside the loop), `train_step` on gold completions for SFT, `TAO.probe` for
the readiness verdict. Labels stay in the bench: records reach the library label-free (records.split_labels) and
every scorer call passes `LabelFreeScorer` (inside `GoldDiagnostics`).

    probe      the readiness probe on the task's labeled probe split, before any training: statistics + verdict
    base       greedy accuracy of the prompted base model on the test split
    sft        SFT on the gold answers of the same training prompts (labels: the ceiling TAO is compared with)
    bon_sft    best-of-N SFT with label-free selection (RAFT-style: sample n, train on each group's top-rewarded)
    tao        GRPO with the guards (profile.guards), label-free scorers
    multitask  one TAO run over every competence task's prompts, each scored by its own task's scorers
    speed      greedy tokens/s of the base model and of the merged TAO model (seed 0, n = profile.n)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.quality.evaluation import evaluate_accuracy, greedy_tokens_per_second
from bench.quality.records import Example
from bench.quality.suite_diagnostics import GoldDiagnostics
from bench.quality.suite_profiles import SuiteProfile
from bench.quality.suite_tasks import SuiteTask
from tao_engine.engine import Engine, EngineConfig, SamplingParams
from tao_engine.rl.prompt_data import PromptCursor
from tao_engine.rl.tao_config import TAOConfig
from tao_engine.scoring.registry import build_composite

# (task name -> (train, probe, test) examples)
Splits = Mapping[str, tuple[list[Example], list[Example], list[Example]]]


def max_tokens(profile: SuiteProfile, task: SuiteTask) -> int:
    return profile.max_tokens.get(task.name, task.max_tokens)


def tao_config(profile: SuiteProfile, tasks: Sequence[SuiteTask], algorithm: str, n: int, seed: int, run_dir: str,
               guards: Mapping[str, Any] | None) -> TAOConfig:
    """The TOML-equivalent config of one tuned cell. Several tasks: a [tasks.<name>] table each (scored by the
    bench's scorer object, which dispatches by task), the largest token budget, the first task's temperature."""
    table: dict[str, Any] = {
        "data": {"prompts_per_step": profile.prompts_per_step},
        # top_p = 1, no penalties: the sampler's log-probs are the trainer's, and the entropy estimate is unbiased.
        "sampling": {"n": n, "temperature": tasks[0].temperature, "top_p": 1.0,
                     "max_tokens": max(max_tokens(profile, t) for t in tasks)},
        "algorithm": {"name": algorithm},
        "optim": {"lr": profile.lr, "warmup_steps": 1},
        "lora": {"r": profile.lora_r, "alpha": 2.0 * profile.lora_r},
        # Activations of 2k tokens kept (~5 GB per cell at its peak, two cells at once fit the 24 GB machine):
        # recomputing them (gradient checkpointing, the library's low-memory default) costs a third more time.
        "train": {"max_tokens_per_forward": 2048, "gradient_checkpointing": False},
        "engine": {"kv_cache_bytes": profile.kv_cache_bytes, "max_num_seqs": 128, "seed": seed},
        "run": {"steps": profile.steps, "output_dir": run_dir, "seed": seed, "keep_last": 1},
        "probe": {"before_tune": False, "prompts": profile.probe_prompts},
    }
    if guards:
        table["guards"] = dict(guards)
    if len(tasks) > 1:
        table["tasks"] = {t.name: {} for t in tasks}
    else:
        table["scoring"] = {"scorers": [dict(s) for s in tasks[0].scorers]}
    return TAOConfig.from_dict(table)


def _diagnosing_scorer(tasks: Sequence[SuiteTask], splits: Splits, holdout: Sequence[str]) -> GoldDiagnostics:
    examples = {ex.record.context["qid"]: (t.name, ex) for t in tasks for split in splits[t.name] for ex in split}
    gold_sql = [ex.gold.get("gold_sql", "") for _, ex in examples.values()]
    return GoldDiagnostics({t.name: build_composite([dict(s) for s in t.scorers]) for t in tasks},
                           {t.name: t for t in tasks}, examples, holdout, gold_sql)


def _records(task: SuiteTask, examples: Sequence[Example], multitask: bool) -> list[Any]:
    return [dataclasses.replace(ex.record, task=task.name) if multitask else ex.record for ex in examples]


def run_tuned(model: Any, tokenizer: Any, tasks: Sequence[SuiteTask], splits: Splits, profile: SuiteProfile,
              algorithm: str, n: int, seed: int, run_dir: str, guards: Mapping[str, Any] | None,
              adapter_dir: str | None = None) -> dict[str, Any]:
    """TAO.run (algorithm "grpo" for TAO, "bon_sft" for best-of-N SFT) on the tasks' training prompts, then each
    task's test accuracy with the model TAO kept (the best held-out step when the guards keep the best)."""
    from tao_engine.rl.guards.loop import split_holdout
    from tao_engine.rl.tao import TAO

    multitask = len(tasks) > 1
    config = tao_config(profile, tasks, algorithm, n, seed, run_dir, guards)
    records = [r for t in tasks for r in _records(t, splits[t.name][0], multitask)]
    _, held = split_holdout(records, config.guards.holdout_prompts, config.run.seed)  # the loop's own split
    scorer = _diagnosing_scorer(tasks, splits, [r.context["qid"] for r in held])
    tao = TAO(config, model=model, tokenizer=tokenizer, scorer=scorer, progress=False)
    start = time.perf_counter()
    result = tao.run(prompts=records)
    train_s = time.perf_counter() - start
    evals = {t.name: evaluate_accuracy(tao.engine, t, splits[t.name][2], max_tokens(profile, t)) for t in tasks}
    if adapter_dir is not None:
        from tao_engine.rl.lora_adapter import save_lora_adapter

        save_lora_adapter(tao.model, adapter_dir)
    keep = ("reward_mean", "guard/holdout_score", "guard/holdout_entropy", "guard/majority_share",
            "guard/warmup", "guard/collapse", "guard/skipped_unclear", "zero_variance_frac", "generated_tokens")
    history = [{"step": h["step"], **{k: h[k] for k in keep if k in h}} for h in result.history]
    for h, d in zip(history, scorer.steps, strict=False):
        h.update({k: v for k, v in d.items() if k != "task"})
    return {"eval": evals[tasks[0].name] if not multitask else None,
            "evals": {name: e for name, e in evals.items()} if multitask else None,
            "history": history, "train_s": train_s, "steps_run": result.steps, "best_step": result.best_step,
            "stopped": result.stopped, "generated_tokens": sum(h.get("generated_tokens", 0) for h in history)}


def run_sft(model: Any, tokenizer: Any, task: SuiteTask, splits: Splits, profile: SuiteProfile, seed: int,
            run_dir: str) -> dict[str, Any]:
    """profile.steps steps of profile.prompts_per_step gold completions each (bon_sft's NLL), then test accuracy."""
    from bench.quality.sft import gold_rollouts
    from tao_engine.rl.tao import TAO
    from tao_engine.rl.trainer import train_step

    config = tao_config(profile, [task], "bon_sft", 2, seed, run_dir, None)
    tao = TAO(config, model=model, tokenizer=tokenizer, scorer=build_composite([dict(s) for s in task.scorers]),
              progress=False)
    train = splits[task.name][0]
    cursor = PromptCursor(len(train), seed=seed)
    sampling = SamplingParams(n=1, temperature=1.0, max_tokens=max_tokens(profile, task))
    start = time.perf_counter()
    history = []
    for step in range(1, profile.steps + 1):
        batch = gold_rollouts(tokenizer, task, [train[i] for i in cursor.take(profile.prompts_per_step)], sampling)
        stats = train_step(tao.model, batch, tao.optimizer, tao.train_config, tao.reference, tao.lr_scheduler)
        history.append({"step": step, "loss": stats.as_dict().get("loss")})
    train_s = time.perf_counter() - start
    tao.engine.weights_updated()
    return {"eval": evaluate_accuracy(tao.engine, task, splits[task.name][2], max_tokens(profile, task)),
            "history": history, "train_s": train_s}


def run_base(model: Any, tokenizer: Any, task: SuiteTask, splits: Splits, profile: SuiteProfile) -> dict[str, Any]:
    engine = Engine(model, EngineConfig(kv_cache_bytes=profile.kv_cache_bytes, max_num_seqs=128), tokenizer)
    return {"eval": evaluate_accuracy(engine, task, splits[task.name][2], max_tokens(profile, task)), "train_s": 0.0}


def run_probe_cell(model: Any, tokenizer: Any, task: SuiteTask, splits: Splits, profile: SuiteProfile,
                   run_dir: str) -> dict[str, Any]:
    """TAO.probe on the labeled probe split with the TAO cell's own settings (n, temperature, scorers, guards)."""
    from tao_engine.rl.tao import TAO

    config = tao_config(profile, [task], "grpo", profile.n, 0, run_dir, profile.guards)
    probe = splits[task.name][1]
    by_qid = {ex.record.context["qid"]: ex for ex in probe}
    tao = TAO(config, model=model, tokenizer=tokenizer, scorer=build_composite([dict(s) for s in task.scorers]),
              progress=False)

    def is_correct(text: str, record: Any) -> bool:
        ex = by_qid[record.context["qid"]]
        return task.is_correct(text, ex.gold, ex.record.context)

    report = tao.probe(records=[ex.record for ex in probe], is_correct=is_correct)
    return {"probe": report.as_dict(), "probe_text": report.text(), "train_s": 0.0}


def run_speed(model: Any, tokenizer: Any, task: SuiteTask, splits: Splits, profile: SuiteProfile,
              load_model: Any, adapter: Any) -> dict[str, Any]:
    """Greedy tokens/s of the base model and of the merged tuned model, alternated twice (best of each)."""
    from bench.quality.cells import merged_tuned_model

    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"speed cell: no tuned adapter at {adapter}; run the 'tao' cell of seed 0 first")
    tuned = merged_tuned_model(load_model, adapter)
    prompts = [ex.record.prompt for ex in splits[task.name][2][: profile.speed_prompts]]
    config = EngineConfig(kv_cache_bytes=profile.kv_cache_bytes, max_num_seqs=128)
    engines = {"base": Engine(model, config, tokenizer), "tuned": Engine(tuned, config, tokenizer)}
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(2):
        for name, engine in engines.items():
            rates[name].append(greedy_tokens_per_second(engine, prompts, profile.speed_tokens))
    best = {name: max(r) for name, r in rates.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("base", model), ("tuned", tuned))}
    return {"tok_s_base": best["base"], "tok_s_tuned": best["tuned"], "tok_s_ratio": best["tuned"] / best["base"],
            "rates": rates, "params": params, "train_s": 0.0}
