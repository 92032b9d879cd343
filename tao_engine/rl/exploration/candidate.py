"""`Candidate`: one explored answer to one prompt, with what it cost and how it was found."""

from __future__ import annotations

from dataclasses import dataclass

from tao_engine.engine.prompts import PromptLike


@dataclass(frozen=True)
class Candidate:
    strategy: str  # plain | reason | refine (a mixed exploration records each entry's own strategy)
    exploration_prompt: PromptLike  # what the model was asked (refine: the last revise prompt)
    raw_output: str  # what it wrote (refine: the last revision)
    response: str | None  # the transformed response the model should answer directly; None = transform failed
    tokens: int  # generated tokens this candidate cost (refine: draft + every critique and revision)
    temperature: float
    finish_reason: str = "stop"  # of the raw output's generation
    # plain: the sampled token ids (EOS included) of the inference-time prompt, kept as they are; None otherwise
    response_token_ids: tuple[int, ...] | None = None
    trace: tuple[str, ...] = ()  # refine: draft, critique 1, revision 1, critique 2, ...
    skipped: bool = False  # mixed: not generated because the prompt's token budget was spent

    @property
    def failed(self) -> bool:
        """No response to train on (transform found nothing, or the budget skipped it)."""
        return self.response is None
