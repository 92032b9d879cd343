"""Label-free early stopping and checkpoint selection on held-out unlabeled prompts.

Every `holdout_every` steps the policy samples `holdout_n` candidates for each held-out prompt (prompts taken out of
training, never trained on), scored by the run's own scorers. The label-free score is their mean reward;
self-consistency (the mean majority share) and the policy's entropy (mean -log p of the sampled tokens under the
distribution sampled, an unbiased estimate of its entropy per token) are logged beside it. Label-free rewards can
rise while the model gets worse (a collapsing vote agrees with itself ever more), so the held-out score is watched
for a fall, not only for a rise:

- stop when the score stayed below its best for `patience` evaluations in a row, or when the entropy fell below
  `min_entropy` (a policy that no longer explores has stopped learning and started collapsing);
- `keep_best`: the checkpoint at the best evaluation becomes final/.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tao_engine.rl.guards.answers import answer_keys, group_vote
from tao_engine.rl.guards.config import GuardsSection


@dataclass(frozen=True)
class HoldoutScore:
    score: float  # mean reward of the held-out samples
    consistency: float  # mean majority share
    entropy: float  # nats per sampled token

    def as_metrics(self) -> dict[str, float]:
        return {"guard/holdout_score": self.score, "guard/holdout_consistency": self.consistency,
                "guard/holdout_entropy": self.entropy}


def holdout_score(sample_and_score: Callable[[Sequence[Any], Any], Any], records: Sequence[Any], sampling: Any,
                  guards: GuardsSection, seed: int) -> HoldoutScore:
    """Sample, score and summarize the held-out prompts (see the module docstring). sample_and_score: (records,
    SamplingParams) -> their scored Rollouts, as the run scores them. `seed` fixes the samples, so an evaluation
    does not draw from the engine's generator (a resumed run samples its training batches alike)."""
    params = dataclasses.replace(sampling, n=guards.holdout_n, seed=seed)
    batch = sample_and_score(records, params)
    rewards = [r for group in batch.rewards or [] for r in group if r is not None]
    keys = answer_keys(batch.completion_texts, guards.answer, batch.answers)
    tokens = [lp for group in batch.sampler_logprobs for sample in group for lp in sample]
    return HoldoutScore(
        score=sum(rewards) / len(rewards) if rewards else math.nan,
        consistency=sum(group_vote(k).share for k in keys) / len(keys) if keys else math.nan,
        entropy=-sum(tokens) / len(tokens) if tokens else math.nan,
    )


@dataclass
class HoldoutTracker:
    """The evaluations so far and the stopping rule; its state goes into every checkpoint, so a resumed run decides
    as the uninterrupted one would."""

    patience: int = 0
    min_entropy: float = 0.0
    evaluations: list[dict[str, float]] = field(default_factory=list)  # {"step", "score", "consistency", "entropy"}

    @property
    def best(self) -> dict[str, float] | None:
        scored = [e for e in self.evaluations if not math.isnan(e["score"])]
        return max(scored, key=lambda e: (e["score"], -e["step"])) if scored else None

    def record(self, step: int, result: HoldoutScore) -> tuple[bool, str | None]:
        """(whether this evaluation is the best so far, why to stop now or None)."""
        self.evaluations.append({"step": step, "score": result.score, "consistency": result.consistency,
                                 "entropy": result.entropy})
        best = self.best
        is_best = best is not None and best["step"] == step
        if self.min_entropy > 0 and result.entropy < self.min_entropy:
            return is_best, (f"the policy's entropy fell to {result.entropy:.3f} nats/token, below "
                             f"[guards] min_entropy {self.min_entropy}: it has stopped exploring")
        if self.patience and best is not None:
            since = [e for e in self.evaluations if e["step"] > best["step"]]
            if len(since) >= self.patience:
                return is_best, (f"the held-out label-free score has stayed below its best ({best['score']:.4f} at "
                                 f"step {int(best['step'])}) for {len(since)} evaluations ([guards] patience "
                                 f"{self.patience})")
        return is_best, None

    def state(self) -> dict[str, Any]:
        return {"evaluations": [dict(e) for e in self.evaluations]}

    def load_state(self, state: Mapping[str, Any], up_to_step: int) -> None:
        """Restore from a checkpoint's state, keeping the evaluations of steps <= up_to_step."""
        self.evaluations = [dict(e) for e in state.get("evaluations", []) if e["step"] <= up_to_step]
