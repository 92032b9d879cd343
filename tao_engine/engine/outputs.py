"""What the engine returns: one `RequestOutput` per request, holding one `SampleOutput` per sample."""

from __future__ import annotations

from dataclasses import dataclass, field

FINISH_STOP = "stop"  # EOS, a stop token id or a stop string
FINISH_LENGTH = "length"  # max_tokens reached (or the model's context)
FINISH_ABORT = "abort"  # aborted by the caller, or the request failed (see RequestOutput.error)


@dataclass
class SampleOutput:
    index: int  # which of the request's n samples
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    # log p(token) under the distribution it was drawn from (temperature, top-k/top-p/min-p, penalties applied)
    logprobs: list[float] = field(default_factory=list)
    # log p(token) under the raw model at temperature 1, no filtering, no penalties
    raw_logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # the stop string or stop token id that ended the sample

    @property
    def cumulative_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0  # prompt tokens served from the prefix cache
    num_generated_tokens: int = 0

    @property
    def latency(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    samples: list[SampleOutput]
    metrics: RequestMetrics
    error: str | None = None  # set when the request failed (e.g. prompt longer than the context or KV budget)

    @property
    def finished(self) -> bool:
        return self.error is not None or all(s.finished for s in self.samples)
