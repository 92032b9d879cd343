"""`GuardsSection` (`[guards]` in a TAO TOML): the guards label-free RL needs, each off by default and each logged per
step under `guard/`. What they guard against (TTRL, SRT, "No Free Lunch", TTRL-Guard): a majority vote that locks
onto a wrong answer, one answer winning every prompt, and a policy whose entropy collapses while its self-reward
keeps rising.

    [guards]
    answer = "auto"              # how a candidate's answer is keyed for votes: "auto" (the voting scorer's own key:
                                 #   majority_vote's extracted answer, sql_agreement's result set; else the whole
                                 #   normalized reply) or an extractor name (last_number, boxed, json, sql, ...)
    min_majority_share = 0.0     # skip a group whose top answer holds less than this share of its samples
                                 #   (samples with no answer count against it)
    polarized_ratio = 0.0        # skip a group whose runner-up holds >= this fraction of the top answer's votes
                                 #   (0 = off; 1.0 skips exact ties only)
    agreement_scaling = false    # multiply a group's advantages by its majority share (confident groups teach more)
    minority_weight = 1.0        # scale of the (negative) advantages of samples outside the majority: < 1 keeps a
                                 #   minority answer alive instead of driving it to zero
    warmup_steps = 0             # format warm-up: the first k steps train best-of-N SFT on the candidates that pass
                                 #   every rule scorer (the pointwise scorers; votes and judges excluded)
    warmup_pass = 0.5            # a rule scorer's score that counts as a pass
    collapse_share = 0.0         # cross-prompt collapse: one answer is the majority answer of more than this share
                                 #   of a step's prompts (0 = off)
    collapse_entropy_ratio = 0.0 # ... or the entropy of the majority answers across the step's prompts fell below
                                 #   this fraction of the baseline (the readiness probe's, else the first step's)
    collapse_min_prompts = 4     # ... with at least this many prompts in the step
    collapse_action = "penalize" # "penalize": that answer's samples get the group's lowest reward for the step;
                                 #   "stop": end the run (the best checkpoint is kept)
    holdout_prompts = 0          # label-free early stopping: take this many unlabeled prompts out of training and
                                 #   score the policy on them (the same scorers, plus self-consistency)
    holdout_every = 1            # ... every this many steps, and after the last one
    holdout_n = 4                # ... with this many samples per prompt
    patience = 0                 # stop when the held-out label-free score fell this many evaluations in a row
                                 #   below its best (0 = never stop on it)
    min_entropy = 0.0            # stop when the policy's entropy (nats per sampled token) falls below this
    keep_best = false            # final/ = the checkpoint with the best held-out label-free score
"""

from __future__ import annotations

from dataclasses import dataclass

ANSWER_AUTO = "auto"
COLLAPSE_ACTIONS = ("penalize", "stop")


@dataclass(frozen=True)
class GuardsSection:
    answer: str = ANSWER_AUTO
    min_majority_share: float = 0.0
    polarized_ratio: float = 0.0
    agreement_scaling: bool = False
    minority_weight: float = 1.0
    warmup_steps: int = 0
    warmup_pass: float = 0.5
    collapse_share: float = 0.0
    collapse_entropy_ratio: float = 0.0
    collapse_min_prompts: int = 4
    collapse_action: str = "penalize"
    holdout_prompts: int = 0
    holdout_every: int = 1
    holdout_n: int = 4
    patience: int = 0
    min_entropy: float = 0.0
    keep_best: bool = False

    def __post_init__(self) -> None:
        if self.answer != ANSWER_AUTO:
            from tao_engine.scoring.extract import EXTRACTORS

            if self.answer not in EXTRACTORS:
                raise ValueError(f"[guards] answer must be 'auto' or one of {sorted(EXTRACTORS)}, got {self.answer!r}")
        for name in ("min_majority_share", "polarized_ratio", "minority_weight", "collapse_share",
                     "collapse_entropy_ratio"):
            _fraction(name, getattr(self, name))
        for name in ("warmup_steps", "holdout_prompts", "patience"):
            _count(name, getattr(self, name), minimum=0)
        for name in ("holdout_every", "collapse_min_prompts"):
            _count(name, getattr(self, name), minimum=1)
        _count("holdout_n", self.holdout_n, minimum=2)
        if self.collapse_action not in COLLAPSE_ACTIONS:
            raise ValueError(f"[guards] collapse_action must be one of {COLLAPSE_ACTIONS}, "
                             f"got {self.collapse_action!r}")
        for name in ("warmup_pass", "min_entropy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"[guards] {name} must be a number >= 0, got {value!r}")
        if (self.patience or self.keep_best) and not self.holdout_prompts:
            raise ValueError("[guards] patience and keep_best need a held-out score: set holdout_prompts > 0 "
                             "(e.g. 32 unlabeled prompts taken out of training)")

    @property
    def filters_groups(self) -> bool:
        return self.min_majority_share > 0 or self.polarized_ratio > 0

    @property
    def reshapes_advantages(self) -> bool:
        return self.agreement_scaling or self.minority_weight < 1.0

    @property
    def detects_collapse(self) -> bool:
        return self.collapse_share > 0 or self.collapse_entropy_ratio > 0

    @property
    def tracks_holdout(self) -> bool:
        return self.holdout_prompts > 0


def _fraction(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"[guards] {name} must be a number in [0, 1], got {value!r}")


def _count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"[guards] {name} must be an integer >= {minimum}, got {value!r}")
