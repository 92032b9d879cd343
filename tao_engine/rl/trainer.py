"""One RL update on the module the engine samples from: rewards -> advantages -> log-probs -> loss -> optimizer.

`train_step(policy, rollouts, optimizer, config)` is the library entry point for users with their own loop. The
policy is the very module the engine generates with: after the optimizer step the engine's next `generate` samples
from the new weights, with no copy and no sync.

Every forward (old, reference, new) goes through one `PolicyForward`, with one autocast, into `completion_logprobs`
(the prompt of a group is forwarded once for its n completions, and log-probs come from `ops.linear_logprobs`, never
a [tokens, vocab] tensor); the loss through `ops.policy_loss` and the advantages through `ops.group_advantages`.
Groups are split into `num_minibatches` optimizer steps, and each minibatch into micro-batches of at most
`max_tokens_per_forward` tokens whose gradients accumulate; micro-batch losses are weighted so that the accumulated
gradient equals the whole minibatch's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tao_engine import ops
from tao_engine.rl.algorithms import AlgorithmConfig
from tao_engine.rl.batching import Minibatch, plan_minibatches
from tao_engine.rl.lora import has_lora
from tao_engine.rl.optim import GuardedStep
from tao_engine.rl.policy_forward import PolicyForward
from tao_engine.rl.preference import best_and_worst, dpo_loss, sft_nll
from tao_engine.rl.rewards import advantage_scale_tensor, comparable_sampler_logprobs, kl_per_token, rewards_tensor


@dataclass(frozen=True)
class TrainConfig:
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    # Temperature of the trainer's log-probs; None = the temperature the rollouts were sampled at (as TRL does), so
    # that the ratio compares like with like. A greedy rollout (temperature 0) trains at 1.
    loss_temperature: float | None = None
    shared_prompt: bool = True  # forward each prompt once for its n completions
    max_tokens_per_forward: int = 8192  # micro-batch budget: gradient accumulation by tokens
    max_grad_norm: float | None = 1.0  # None = no clipping (the norm is still measured)
    gradient_checkpointing: bool = False  # recompute layer activations in the backward: less memory, one more forward
    bf16_autocast: bool = True  # run every forward of the update under bf16 autocast on `autocast_devices`
    autocast_devices: tuple[str, ...] = ("cuda",)  # ("cuda", "cpu"): CPU too (real there, but slower than fp32)
    seed: int = 0  # minibatch shuffling

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, AlgorithmConfig):
            raise TypeError(f"TrainConfig.algorithm must be an AlgorithmConfig, got {type(self.algorithm).__name__}")
        if self.loss_temperature is not None and self.loss_temperature <= 0:
            raise ValueError(f"TrainConfig.loss_temperature must be > 0 (or None), got {self.loss_temperature}")
        if self.max_tokens_per_forward < 1:
            raise ValueError(f"TrainConfig.max_tokens_per_forward must be >= 1, got {self.max_tokens_per_forward}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"TrainConfig.max_grad_norm must be > 0 (or None), got {self.max_grad_norm}")

    def policy_forward(self, temperature: float) -> PolicyForward:
        """The settings of every forward of one update (old, reference and new log-probs alike)."""
        return PolicyForward(temperature, self.shared_prompt, self.bf16_autocast, self.autocast_devices)


@dataclass
class StepStats:
    """What one train_step did; `as_dict()` gives the flat metrics the TAO loop logs."""

    metrics: dict[str, float] = field(default_factory=dict)
    optimizer_steps: int = 0
    skipped_steps: int = 0  # optimizer steps skipped because the loss or a gradient was not finite
    skip_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {**self.metrics, "optimizer_steps": self.optimizer_steps, "skipped_steps": self.skipped_steps}


def train_step(
    policy: nn.Module,
    rollouts: Any,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig | None = None,
    reference: nn.Module | Callable[[], Any] | None = None,
    lr_scheduler: Any = None,
    data_parallel: Any = None,
    on_micro_batch: Callable[[int, int], None] | None = None,
) -> StepStats:
    """Update `policy` on scored rollouts (rollouts.rewards set, e.g. by `tao_engine.rl.score`).

    reference: a frozen module (e.g. `frozen_copy(policy)`), needed when the algorithm uses one (kl_coef > 0, dpo)
    unless the policy has LoRA adapters: their base weights are then the reference.
    lr_scheduler: stepped once per optimizer step when given.
    data_parallel: a `tao_engine.distributed.DataParallelUpdate` (or `ShardedUpdate` for an FSDP2-sharded policy)
    when this rank holds one shard of the batch: advantages, group selection and the minibatch plan then use every
    rank's groups, each rank trains its own, and gradients are summed across ranks before clipping (the step
    equals one process's on the whole batch).
    on_micro_batch(done, total): called after each micro-batch's forward and backward (progress of a long update).
    """
    config = config or TrainConfig()
    algo = config.algorithm
    if algo.needs_reference and reference is None and not has_lora(policy):
        raise ValueError(
            f"train_step: algorithm {algo.name!r} with kl_coef={algo.kl_coef} needs a reference policy; pass "
            "reference=frozen_copy(policy) (tao_engine.rl.frozen_copy), use LoRA (the base weights are the "
            "reference), or set kl_coef=0"
        )
    rewards = rewards_tensor(rollouts)  # [P, n] fp32, NaN = no reward
    if algo.name == "bon_sft":  # the loss reads each group's best completion only: forward nothing else
        rollouts = rollouts.pick(best_and_worst(rewards)[0].tolist())
        rewards = rewards_tensor(rollouts)  # [P, 1]
    forward = config.policy_forward(_loss_temperature(rollouts, config))
    start = time.perf_counter()
    old_all, ref_all, rewards = _old_and_reference(policy, reference, rollouts, rewards, forward, config, data_parallel)
    logprob_s = time.perf_counter() - start
    signal = _batch_signal(rollouts, rewards, algo, forward, data_parallel)
    stats, accum = StepStats(), _Accumulator()
    update_s = _run_minibatches(
        policy, rollouts, optimizer, GuardedStep(optimizer, lr_scheduler, config.max_grad_norm), config, forward,
        signal, old_all, ref_all, data_parallel, stats, accum, on_micro_batch,
    )
    valid = signal.rewards[~torch.isnan(signal.rewards)]
    stats.metrics.update(
        {
            "reward_mean": float(valid.mean()) if valid.numel() else math.nan,
            "reward_std": float(valid.std()) if valid.numel() > 1 else 0.0,
            "advantage_abs_mean": float(signal.advantages.abs().mean()),
            "zero_variance_frac": float(signal.zero_variance.float().mean()),
            "groups_trained": int(signal.keep.sum()),
            **accum.means(),
            "logprob_s": logprob_s,
            "update_s": update_s,
            "step_s": time.perf_counter() - start,
            "peak_memory_mb": _peak_memory_mb(policy),
        }
    )
    return stats


@dataclass(frozen=True)
class _BatchSignal:
    """What the loss reads of the whole batch, fixed before the first micro-batch."""

    rewards: torch.Tensor  # [P_global, n]: every rank's groups (the local ones in a single process)
    advantages: torch.Tensor  # [P_global, n], the guards' scale applied where it applies
    zero_variance: torch.Tensor  # [P_global] bool
    keep: torch.Tensor  # [P_global] bool: the groups trained
    local_rewards: torch.Tensor  # [P_local, n]
    local_advantages: torch.Tensor  # [P_local, n]
    sampler_lp: torch.Tensor | None  # [B_local, T] the sampler's log-probs when comparable with the trainer's
    shard: Any  # data_parallel.gather's view of this rank's share, None in a single process


def _old_and_reference(policy, reference, rollouts, rewards: torch.Tensor, forward: PolicyForward,
                       config: TrainConfig, data_parallel) -> tuple[Any, Any, torch.Tensor]:
    """The old and reference log-probs the algorithm needs (None otherwise), and the rewards with the KL penalty
    taken out of them when it goes into the reward."""
    algo = config.algorithm
    needs_old = algo.old_logprobs == "trainer" and (algo.epochs * algo.num_minibatches > 1 or algo.kl_in_reward)
    budget = config.max_tokens_per_forward
    old_all = forward.batch_logprobs(policy, rollouts, budget, data_parallel) if needs_old else None
    ref_all = (forward.reference_logprobs(policy, reference, rollouts, budget, data_parallel)
               if algo.needs_reference else None)
    if algo.kl_in_reward:
        assert old_all is not None and ref_all is not None
        seq_kl = (kl_per_token(old_all.logprobs, ref_all.logprobs, algo.kl_type) * old_all.mask).sum(dim=1)
        rewards = rewards - algo.kl_coef * seq_kl.view_as(rewards)
    return old_all, ref_all, rewards


def _batch_signal(rollouts, rewards: torch.Tensor, algo: AlgorithmConfig, forward: PolicyForward,
                  data_parallel) -> _BatchSignal:
    local_rewards = rewards  # [P_local, n]; equal to the global rewards in a single process
    shard = data_parallel.gather(rollouts, rewards) if data_parallel is not None else None
    if shard is not None:
        rewards = shard.rewards  # [P_global, n]: batch statistics and the plan see every rank's groups
    advantages, zero_variance = ops.group_advantages(rewards, algo.advantage, algo.advantage_eps)  # [P, n], [P]
    local_advantages = advantages if shard is None else advantages[shard.rows]  # [P_local, n]
    scale = advantage_scale_tensor(rollouts)  # [P_local, n] or None: the guards' per-sample factors
    if scale is not None:
        local_advantages = local_advantages * scale
        advantages = local_advantages if shard is None else advantages
    sampler_lp = comparable_sampler_logprobs(rollouts, forward.temperature)  # [B, T] or None
    if algo.old_logprobs == "sampler" and sampler_lp is None:
        raise ValueError(
            "train_step: old_logprobs='sampler' needs the sampled distribution to be the trainer's: sample with "
            "top_k=0, top_p=1, min_p=0 and no penalties (or at loss temperature 1), or use old_logprobs='trainer'"
        )
    if algo.tis_cap is not None and sampler_lp is None:
        raise ValueError("train_step: tis_cap needs sampler log-probs comparable with the trainer's (see old_logprobs)")
    keep = _groups_to_train(algo, rewards, zero_variance)
    return _BatchSignal(rewards, advantages, zero_variance, keep, local_rewards, local_advantages, sampler_lp, shard)


def _run_minibatches(
    policy, rollouts, optimizer: torch.optim.Optimizer, guarded: GuardedStep, config: TrainConfig,
    forward: PolicyForward, signal: _BatchSignal, old_all, ref_all, data_parallel, stats: StepStats,
    accum: _Accumulator, on_micro_batch: Callable[[int, int], None] | None,
) -> float:
    """Every epoch's minibatches, one optimizer step each over accumulated micro-batches; returns their seconds."""
    algo, shard = config.algorithm, signal.shard
    plan = plan_minibatches(
        rollouts if shard is None else shard.layout, signal.keep, algo.num_minibatches, config.max_tokens_per_forward,
        config.seed, config.shared_prompt,
    )
    schedule = [plan.epoch(epoch) for epoch in range(algo.epochs)]
    total_micro = sum(len(minibatch.micro_batches) for minibatches in schedule for minibatch in minibatches)
    micro_done, seconds = 0, 0.0
    for epoch, minibatches in enumerate(schedule):
        for minibatch in minibatches:
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            minibatch_loss = 0.0
            ran = 0
            for micro in minibatch.micro_batches:
                micro_done += 1
                mine = micro if shard is None else shard.local(micro)  # the groups this rank owns
                if not mine:
                    continue
                minibatch_loss += _micro_step(
                    policy, rollouts, mine, minibatch, algo, config, forward, signal.local_advantages,
                    signal.local_rewards, old_all, ref_all, signal.sampler_lp, accum, first_pass=epoch == 0,
                )
                ran += 1
                if on_micro_batch is not None:
                    on_micro_batch(micro_done, total_micro)
            if data_parallel is not None:
                # FSDP2: forwards and backwards are collectives, so a rank with fewer micro-batches idles in step.
                idle = max(0, data_parallel.lockstep_micro_steps(minibatch.micro_batches, shard) - ran)
                for _ in range(idle):
                    _idle_micro_step(policy, config, forward)
                accum.add("idle_micro_steps", float(idle), mean=False)  # work lost to imbalance across ranks
                minibatch_loss = data_parallel.sync_gradients(optimizer, minibatch_loss)
            accum.add("loss", minibatch_loss)
            _optimizer_step(guarded, stats, accum, minibatch_loss)
            seconds += time.perf_counter() - t0
    return seconds


def _micro_step(
    policy, rollouts, micro: Sequence[int], minibatch: Minibatch, algo: AlgorithmConfig, config: TrainConfig,
    forward: PolicyForward, advantages: torch.Tensor, rewards: torch.Tensor, old_all, ref_all, sampler_lp,
    accum: _Accumulator, first_pass: bool,
) -> float:
    """Forward + backward of one micro-batch (whole groups `micro`); returns its weighted loss."""
    rows = _rows_of_groups(rollouts, micro)  # completion rows, group by group
    out = forward.logprobs(
        policy,
        [rollouts.prompt_token_ids[g] for g in micro],
        [rollouts.completion_token_ids[g] for g in micro],
        max_tokens_per_forward=None,  # the micro-batch already fits the budget
        return_entropy=algo.entropy_coef > 0,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    mask = out.mask
    lp = out.logprobs
    ref = None if ref_all is None else _take(ref_all.logprobs, rows, lp.shape[1])
    if algo.name == "bon_sft":
        loss, share = sft_nll(lp, mask, best_and_worst(rewards[micro])[0]), len(micro) / minibatch.num_groups
    elif algo.name == "dpo":
        best, worst = best_and_worst(rewards[micro])
        loss = dpo_loss(lp, ref, mask, best, worst, algo.dpo_beta)
        share = len(micro) / minibatch.num_groups
    else:
        old = lp.detach() if old_all is None else _take(old_all.logprobs, rows, lp.shape[1])
        adv = advantages[micro].reshape(-1)  # [B_micro], rows in the same group-major order
        weights = None
        if sampler_lp is not None:
            sampler = _take(sampler_lp, rows, lp.shape[1])
            gap = ((lp.detach() - sampler).abs() * mask).sum() / mask.sum().clamp(min=1)
            if first_pass:
                accum.add("sampler_trainer_gap", float(gap))
            if algo.old_logprobs == "sampler":
                old = sampler
            if algo.tis_cap is not None:
                weights = torch.exp(old - sampler).clamp(max=algo.tis_cap)
        result = ops.policy_loss(
            lp, old, adv, mask, ref, weights,
            clip_low=algo.clip_low, clip_high=algo.clip_high, dual_clip=algo.dual_clip, ratio_level=algo.ratio_level,
            kl_type=algo.kl_type, kl_coef=0.0 if algo.kl_in_reward else algo.kl_coef, loss_agg=algo.loss_agg,
            max_tokens=max(1, int(getattr(rollouts.sampling, "max_tokens", lp.shape[1]))),
        )
        loss = result.loss
        accum.add("clip_fraction", float(result.clip_fraction))
        accum.add("ratio_mean", float(result.ratio_mean))
        accum.add("kl", float(result.kl_mean))
        share = minibatch.share(micro, mask, algo.loss_agg)
    if out.entropy is not None:
        entropy = (out.entropy * mask).sum() / mask.sum().clamp(min=1)
        accum.add("entropy", float(entropy.detach()))
        loss = loss - algo.entropy_coef * entropy
    weighted = loss * share
    weighted.backward()
    accum.add("tokens", float(mask.sum()), mean=False)
    return float(weighted.detach())


def _idle_micro_step(policy, config: TrainConfig, forward: PolicyForward) -> None:
    """A forward and backward of one token with a zero loss: the collectives of a real micro-step (every unit's
    all-gather and reduce-scatter, recomputation included), adding exact zeros to the gradients."""
    out = forward.logprobs(policy, [[0]], [[[0]]], gradient_checkpointing=config.gradient_checkpointing)
    (out.logprobs.sum() * 0.0).backward()


def _optimizer_step(guarded: GuardedStep, stats: StepStats, accum: _Accumulator, loss: float) -> None:
    result = guarded(loss)  # clip, step, schedule; skipped (weights untouched) on a non-finite loss or gradient
    accum.add("grad_norm", result.grad_norm)
    accum.add("lr", result.lr)
    if result.applied:
        stats.optimizer_steps += 1
    else:
        stats.skipped_steps += 1
        stats.skip_reasons.append(result.skip_reason or "not applied")


class _Accumulator:
    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._is_mean: dict[str, bool] = {}

    def add(self, key: str, value: float, mean: bool = True) -> None:
        self._sums[key] = self._sums.get(key, 0.0) + value
        self._counts[key] = self._counts.get(key, 0) + 1
        self._is_mean[key] = mean

    def means(self) -> dict[str, float]:
        return {k: (v / self._counts[k] if self._is_mean[k] else v) for k, v in self._sums.items()}


def _groups_to_train(algo: AlgorithmConfig, rewards: torch.Tensor, zero_variance: torch.Tensor) -> torch.Tensor:
    """[P] bool: the groups that carry a learning signal for this algorithm."""
    has_reward = ~torch.isnan(rewards).all(dim=1)
    if algo.name in ("bon_sft",):
        return has_reward
    if algo.name == "dpo":
        return has_reward & ~zero_variance  # needs a best that beats a worst
    if algo.dynamic_sampling:
        return has_reward & ~zero_variance
    return has_reward


def _rows_of_groups(rollouts, groups: Sequence[int]) -> list[int]:
    offsets = [0]
    for comps in rollouts.completion_token_ids:
        offsets.append(offsets[-1] + len(comps))
    return [r for g in groups for r in range(offsets[g], offsets[g + 1])]


def _take(full: torch.Tensor, rows: list[int], width: int) -> torch.Tensor:
    # full [B_all, T_all] -> [len(rows), width]: the micro-batch's rows, cut to its longest completion.
    return full[torch.tensor(rows, dtype=torch.long, device=full.device)][:, :width]


def _loss_temperature(rollouts, config: TrainConfig) -> float:
    if config.loss_temperature is not None:
        return config.loss_temperature
    temperature = float(getattr(rollouts.sampling, "temperature", 1.0))
    return temperature if temperature > 0 else 1.0


def _peak_memory_mb(policy: nn.Module) -> float:
    device = next(policy.parameters()).device
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
