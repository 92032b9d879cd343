"""The RL algorithms behind one switch: `AlgorithmConfig(name=...)` fills in each algorithm's published defaults,
and any field given explicitly overrides its preset.

name          advantages       ratio     clip (low, high)  aggregation               notes
grpo          mean_std         token     0.2, 0.2          seq_mean_token_mean       DeepSeekMath's GRPO
dr_grpo       mean             token     0.2, 0.2          seq_mean_token_sum_norm   no length or std bias
dapo          mean_std         token     0.2, 0.28         token_mean                clip-higher, dynamic sampling
gspo          mean_std         sequence  3e-4, 4e-4        seq_mean_token_mean       sequence-level ratio
rloo          leave_one_out    token     0.2, 0.2          token_mean                leave-one-out baseline
reinforce_pp  mean_batch_std   token     0.2, 0.2          token_mean                REINFORCE++-baseline
ppo           mean_std         token     0.2, 0.2          token_mean                2 epochs x 2 minibatches
bon_sft       -                -         -                 token_mean                NLL of each group's best
dpo           -                -         -                 -                         DPO, group best vs worst

Advantages are `ops.group_advantages` modes; aggregations are `ops.policy_loss` modes. Dynamic sampling (DAPO) drops
the groups whose rewards do not vary and lets the TAO loop refill the batch.

The PPO-family losses (every row but the last two) run through `tao_engine.ops.policy_loss`; bon_sft is the negative
log-likelihood of the best candidate; dpo needs a reference (a frozen copy, or the base weights under LoRA).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tao_engine.config_dict import dataclass_from_dict

ALGORITHMS = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "ppo", "bon_sft", "dpo")
POLICY_GRADIENT = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "ppo")
ADVANTAGE_MODES = ("mean", "mean_std", "leave_one_out", "mean_batch_std", "none")
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm")
KL_TYPES = ("k1", "k2", "k3")
OLD_LOGPROBS = ("trainer", "sampler")

# name -> the fields its preset sets; a field the user gives explicitly wins.
_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {"advantage": "mean_std", "loss_agg": "seq_mean_token_mean"},
    "dr_grpo": {"advantage": "mean", "loss_agg": "seq_mean_token_sum_norm"},
    "dapo": {"advantage": "mean_std", "loss_agg": "token_mean", "clip_high": 0.28, "dynamic_sampling": True},
    "gspo": {
        "advantage": "mean_std",
        "loss_agg": "seq_mean_token_mean",
        "ratio_level": "sequence",
        "clip_low": 3e-4,
        "clip_high": 4e-4,
    },
    "rloo": {"advantage": "leave_one_out", "loss_agg": "token_mean"},
    "reinforce_pp": {"advantage": "mean_batch_std", "loss_agg": "token_mean"},
    "ppo": {"advantage": "mean_std", "loss_agg": "token_mean", "epochs": 2, "num_minibatches": 2},
    "bon_sft": {"advantage": "none", "loss_agg": "token_mean"},
    "dpo": {"advantage": "none", "loss_agg": "token_mean", "dpo_beta": 0.1},
}


@dataclass(frozen=True)
class AlgorithmConfig:
    """One algorithm and its hyperparameters. None = the algorithm's preset (table above), else the generic default."""

    name: str = "grpo"  # grpo, dr_grpo, dapo, gspo, rloo, reinforce_pp, ppo, bon_sft or dpo: a preset of the rest
    advantage: str | None = None  # how rewards [P, n] become advantages
    loss_agg: str | None = None  # how per-token losses become one number
    ratio_level: str | None = None  # "token" or "sequence" (GSPO)
    clip_low: float | None = None  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float | None = None  # above clip_low: DAPO's clip-higher keeps low-probability tokens learning
    dual_clip: float | None = None  # c > 1: caps the loss of negative-advantage tokens at c * |A| (dual-clip PPO)
    epochs: int | None = None  # passes over each rollout batch (PPO); 1 = on-policy
    num_minibatches: int | None = None  # optimizer steps per epoch; each holds whole groups
    dynamic_sampling: bool | None = None  # drop zero-variance groups and refill the batch (DAPO)
    max_resample_rounds: int = 3  # refill attempts per step before training on what there is
    # KL to a reference policy; 0 = off and no reference model is held.
    kl_coef: float = 0.0
    kl_type: str = "k3"  # the KL estimator: k1, k2 or k3 (Schulman's approximations)
    kl_in_reward: bool = False  # subtract kl_coef * KL(sequence) from the reward instead of adding it to the loss
    # Where the ratio's old log-probs come from: "trainer" recomputes them before the update (exact on-policy start),
    # "sampler" takes the engine's (only when the sampled distribution is the trainer's: see train_step).
    old_logprobs: str = "trainer"
    # Truncated importance sampling of the sampler/trainer gap: token weights min(p_trainer / p_sampler, C); None = off.
    tis_cap: float | None = None
    entropy_coef: float = 0.0  # adds -entropy_coef * mean entropy (an exploration bonus); 0 = off
    dpo_beta: float | None = None  # DPO: how strongly the preference margin is measured against the reference
    advantage_eps: float = 1e-6  # added to the std before dividing by it (mean_std, mean_batch_std)

    def __post_init__(self) -> None:
        if self.name not in ALGORITHMS:
            raise ValueError(f"AlgorithmConfig.name must be one of {ALGORITHMS}, got {self.name!r}")
        preset = {
            "advantage": "mean_std",
            "loss_agg": "token_mean",
            "ratio_level": "token",
            "clip_low": 0.2,
            "clip_high": 0.2,
            "epochs": 1,
            "num_minibatches": 1,
            "dynamic_sampling": False,
            "dpo_beta": 0.1,
            **_PRESETS[self.name],
        }
        for key, value in preset.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        self._validate()

    def _validate(self) -> None:
        choices = {
            "advantage": ADVANTAGE_MODES,
            "loss_agg": LOSS_AGGREGATIONS,
            "ratio_level": ("token", "sequence"),
            "kl_type": KL_TYPES,
            "old_logprobs": OLD_LOGPROBS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"AlgorithmConfig.{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key in ("clip_low", "clip_high"):
            value = getattr(self, key)
            if not 0 < value < 1:
                raise ValueError(f"AlgorithmConfig.{key} must be in (0, 1), got {value}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"AlgorithmConfig.dual_clip must be > 1 (or None), got {self.dual_clip}")
        for key in ("epochs", "num_minibatches", "max_resample_rounds"):
            value = getattr(self, key)
            least = 0 if key == "max_resample_rounds" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"AlgorithmConfig.{key} must be an integer >= {least}, got {value!r}")
        for key in ("kl_coef", "entropy_coef"):
            if getattr(self, key) < 0:
                raise ValueError(f"AlgorithmConfig.{key} must be >= 0, got {getattr(self, key)}")
        if self.tis_cap is not None and self.tis_cap < 1:
            raise ValueError(f"AlgorithmConfig.tis_cap must be >= 1 (or None to turn it off), got {self.tis_cap}")
        if self.dpo_beta is not None and self.dpo_beta <= 0:
            raise ValueError(f"AlgorithmConfig.dpo_beta must be > 0, got {self.dpo_beta}")
        if self.kl_in_reward and self.kl_coef == 0:
            raise ValueError("AlgorithmConfig.kl_in_reward needs kl_coef > 0 (the reward is shaped by kl_coef * KL)")

    @property
    def is_policy_gradient(self) -> bool:
        return self.name in POLICY_GRADIENT

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0 or self.name == "dpo"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlgorithmConfig:
        return dataclass_from_dict(cls, d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
