"""`rollout(engine, prompts, sampling) -> Rollouts`: n completions per prompt from the engine, kept for the update.

The engine samples from the very module the trainer updates (no weight copy), so a rollout after `optimizer.step()`
already uses the new weights. `Rollouts` keeps everything the update needs: token ids of prompts and completions,
the log-probs of the distribution actually sampled (the PPO/importance-sampling "old" log-probs) and the raw
temperature-1 log-probs, finish reasons and timing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from tao_engine.engine.outputs import FINISH_LENGTH, FINISH_STOP
from tao_engine.engine.prompts import PromptLike, as_prompt_list
from tao_engine.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from tao_engine.engine import Engine


class RolloutError(RuntimeError):
    """A prompt could not be rolled out (e.g. longer than the context or the KV budget); `index`: its place in the
    prompts given to `rollout`, when one prompt is to blame."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class SkippedPrompt:
    index: int  # position in the prompts given to `rollout`
    error: str


@dataclass(frozen=True)
class RolloutTiming:
    seconds: float  # wall time of the generation
    num_prompt_tokens: int
    num_completion_tokens: int

    @property
    def completion_tokens_per_second(self) -> float:
        return self.num_completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Rollouts:
    """P prompts with n completions each; per-prompt lists are [P], per-completion lists [P][n], per-token [P][n][T]."""

    prompts: list[PromptLike]  # as given (the ones kept, see prompt_indices)
    prompt_texts: list[str | None]  # the rendered text (chat template applied); None for token-id prompts
    prompt_token_ids: list[list[int]]
    completion_token_ids: list[list[list[int]]]
    completion_texts: list[list[str]]
    sampler_logprobs: list[list[list[float]]]  # log p of each token under the distribution it was drawn from
    raw_logprobs: list[list[list[float]]]  # log p under the raw model (temperature 1, no filtering or penalties)
    finish_reasons: list[list[str]]  # "stop" or "length" per completion
    sampling: SamplingParams  # the parameters used
    timing: RolloutTiming
    prompt_indices: list[int] = field(default_factory=list)  # index in `rollout`'s prompts of each kept prompt
    skipped: list[SkippedPrompt] = field(default_factory=list)  # prompts dropped with skip_failed=True
    # Set by `tao_engine.rl.score`: [P][n] reward of each completion (None = no scorer applied), scorer metrics,
    # [P] {scorer label: [n] its own scores}, and [P][n] the answer key each completion gave by the voting scorer's
    # notion of "the same answer" (None: no voting scorer; tao_engine.rl.guards.answers).
    rewards: list[list[float | None]] | None = None
    reward_metrics: dict[str, float] | None = None
    scorer_rewards: list[dict[str, list[float | None]]] | None = None
    answers: list[list[Hashable | None]] | None = None
    # Set by the guards (tao_engine.rl.guards): [P][n] factors train_step multiplies into the advantages.
    advantage_scale: list[list[float]] | None = None

    # Every per-prompt list, in one place: what `select` and `concat` carry along (optional ones may be None).
    PER_PROMPT: ClassVar[tuple[str, ...]] = (
        "prompts", "prompt_texts", "prompt_token_ids", "completion_token_ids", "completion_texts", "sampler_logprobs",
        "raw_logprobs", "finish_reasons", "prompt_indices", "rewards", "scorer_rewards", "answers", "advantage_scale",
    )
    SCORED: ClassVar[tuple[str, ...]] = ("rewards", "scorer_rewards", "answers", "advantage_scale")

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_token_ids)

    def select(self, groups: Sequence[int]) -> Rollouts:
        """The prompts `groups` (indices into this batch), with everything known about them."""
        changes: dict[str, Any] = {}
        for name in self.PER_PROMPT:
            values = getattr(self, name)
            if name == "prompt_indices" and not values:
                values = list(range(self.num_prompts))
            changes[name] = None if values is None else [values[g] for g in groups]
        return dataclasses.replace(self, **changes)

    def concat(self, other: Rollouts) -> Rollouts:
        """This batch's prompts followed by `other`'s (same sampling). An optional field set on only one side is
        dropped, never padded with made-up values."""
        changes: dict[str, Any] = {}
        for name in self.PER_PROMPT:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "prompt_indices":
                mine = mine or list(range(self.num_prompts))
                theirs = theirs or list(range(other.num_prompts))
            both = (mine is not None and theirs is not None) or name not in self.SCORED
            changes[name] = list(mine or []) + list(theirs or []) if both else None
        return dataclasses.replace(self, **changes)

    # Every per-completion list ([P][n]), in one place: what `pick` narrows (optional ones may be None).
    PER_COMPLETION: ClassVar[tuple[str, ...]] = (
        "completion_token_ids", "completion_texts", "sampler_logprobs", "raw_logprobs", "finish_reasons", "rewards",
        "answers", "advantage_scale",
    )

    def pick(self, samples: Sequence[int]) -> Rollouts:
        """One completion per prompt: `samples[g]` of group g (n becomes 1), with its rewards and scores."""
        if len(samples) != self.num_prompts:
            raise ValueError(f"Rollouts.pick: {len(samples)} picks for {self.num_prompts} prompts")
        changes: dict[str, Any] = {}
        for name in self.PER_COMPLETION:
            values = getattr(self, name)
            changes[name] = None if values is None else [[row[j]] for row, j in zip(values, samples, strict=True)]
        if self.scorer_rewards is not None:
            changes["scorer_rewards"] = [{k: [v[j]] for k, v in per.items()}
                                         for per, j in zip(self.scorer_rewards, samples, strict=True)]
        return dataclasses.replace(self, sampling=dataclasses.replace(self.sampling, n=1), **changes)

    def put_scores(self, parts: Sequence[tuple[Sequence[int], Rollouts]]) -> Rollouts:
        """This batch with the scores of `parts`, each (rows, that `select(rows)` scored): every scored field from
        them, in this batch's order. A field no part set stays None; rows of a part without it get no scores."""
        changes: dict[str, Any] = {}
        for name in self.SCORED:
            values: list[Any] = [None] * self.num_prompts
            for rows, part in parts:
                got = getattr(part, name)
                for k, g in enumerate(rows):
                    values[g] = None if got is None else got[k]
            if all(v is None for v in values):
                changes[name] = None
                continue
            changes[name] = [v if v is not None else self._unscored(name, g) for g, v in enumerate(values)]
        return dataclasses.replace(self, **changes)

    def _unscored(self, name: str, group: int) -> Any:
        # A scored field's value for a group no scorer saw: no scorer's scores, or None for each completion.
        return {} if name == "scorer_rewards" else [None] * len(self.completion_texts[group])

    def without_scores(self) -> Rollouts:
        """The same candidates with rewards, per-scorer scores, answers, advantage scales and metrics cleared."""
        return dataclasses.replace(self, reward_metrics=None, **{name: None for name in self.SCORED})

    @property
    def n(self) -> int:
        return self.sampling.n

    @property
    def num_completions(self) -> int:
        return self.num_prompts * self.n

    # ---- flat views over the P * n completions, group by group --------------------------------------------------

    def group_index(self) -> list[int]:
        """[P*n] the prompt (group) of each flat completion."""
        return [g for g, comps in enumerate(self.completion_token_ids) for _ in comps]

    def flat_prompt_token_ids(self) -> list[list[int]]:
        """[P*n] the prompt of each completion (the same list object n times)."""
        return [self.prompt_token_ids[g] for g in self.group_index()]

    def flat_completion_token_ids(self) -> list[list[int]]:
        return _flatten(self.completion_token_ids)

    def flat_completion_texts(self) -> list[str]:
        return _flatten(self.completion_texts)

    def flat_finish_reasons(self) -> list[str]:
        return _flatten(self.finish_reasons)

    def completion_lengths(self) -> torch.Tensor:
        """[P*n] int64"""
        return torch.tensor([len(c) for c in self.flat_completion_token_ids()], dtype=torch.long)

    # ---- padded tensors [P*n, T], T = longest completion ----------------------------------------------------------

    def completion_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[P*n, T] bool, True at real completion tokens."""
        lengths = self.completion_lengths()
        t = int(lengths.max()) if lengths.numel() else 0
        return (torch.arange(t)[None, :] < lengths[:, None]).to(device)

    def padded_completion_ids(self, pad_id: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
        """[P*n, T] int64, pad_id at padding."""
        return _pad(self.flat_completion_token_ids(), torch.long, pad_id, device)

    def padded_sampler_logprobs(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[P*n, T] fp32, 0 at padding."""
        return _pad(_flatten(self.sampler_logprobs), torch.float32, 0.0, device)

    def padded_raw_logprobs(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[P*n, T] fp32, 0 at padding."""
        return _pad(_flatten(self.raw_logprobs), torch.float32, 0.0, device)


def rollout(
    engine: Engine,
    prompts: PromptLike | Sequence[PromptLike],
    sampling: SamplingParams,
    skip_failed: bool = False,
    progress: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Rollouts:
    """Generate `sampling.n` completions for every prompt (text, token ids or chat messages) with `engine`.

    Log-probs are always returned (`sampling.logprobs` is turned on if off). A prompt that cannot run (too long)
    raises `RolloutError` naming its index, unless `skip_failed=True`: it is then dropped and listed in `skipped`.
    `on_progress(finished samples, all samples)`: see `Engine.generate`.
    """
    if not isinstance(sampling, SamplingParams):
        raise TypeError(f"rollout: sampling must be SamplingParams, got {type(sampling).__name__}")
    if not sampling.logprobs:
        sampling = dataclasses.replace(sampling, logprobs=True)
    items = as_prompt_list(prompts)
    start = time.perf_counter()
    # The engine encodes the prompts (an error names the prompt's index) and returns their text and ids.
    outputs = engine.generate(items, sampling, progress=progress, on_progress=on_progress)
    seconds = time.perf_counter() - start

    kept: list[int] = []
    skipped: list[SkippedPrompt] = []
    for i, out in enumerate(outputs):
        error = out.error or _unfinished(out)
        if error is None:
            kept.append(i)
        elif skip_failed:
            skipped.append(SkippedPrompt(i, error))
        else:
            raise RolloutError(
                f"rollout: prompts[{i}] ({len(out.prompt_token_ids)} tokens) failed: {error}; shorten it, raise the "
                "engine's max_model_len / KV budget, or pass skip_failed=True to drop it", index=i,
            )
    kept_outputs = [outputs[i] for i in kept]
    samples = [out.samples for out in kept_outputs]
    completion_ids = [[s.token_ids for s in ss] for ss in samples]
    return Rollouts(
        prompts=[items[i] for i in kept],
        prompt_texts=[out.prompt for out in kept_outputs],
        prompt_token_ids=[out.prompt_token_ids for out in kept_outputs],
        completion_token_ids=completion_ids,
        completion_texts=[[s.text for s in ss] for ss in samples],
        sampler_logprobs=[[s.logprobs for s in ss] for ss in samples],
        raw_logprobs=[[s.raw_logprobs for s in ss] for ss in samples],
        finish_reasons=[[str(s.finish_reason) for s in ss] for ss in samples],
        sampling=sampling,
        timing=RolloutTiming(
            seconds=seconds,
            num_prompt_tokens=sum(len(out.prompt_token_ids) for out in kept_outputs),
            num_completion_tokens=sum(len(c) for cs in completion_ids for c in cs),
        ),
        prompt_indices=kept,
        skipped=skipped,
    )


def _unfinished(out: Any) -> str | None:
    # generate() returns only when every request has finished; an aborted sample without an error is still unusable.
    for s in out.samples:
        if s.finish_reason not in (FINISH_STOP, FINISH_LENGTH):
            return f"sample {s.index} ended with finish reason {s.finish_reason!r}"
    return None


def _flatten(nested: list[list[Any]]) -> list[Any]:
    return [x for group in nested for x in group]


def _pad(rows: list[list[Any]], dtype: torch.dtype, value: float, device: torch.device | str) -> torch.Tensor:
    t = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), t), value, dtype=dtype)
    for i, r in enumerate(rows):  # one copy per completion, not per token
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=dtype)
    return out.to(device)
