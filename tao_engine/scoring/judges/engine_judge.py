"""What every LLM judge shares: the in-process engine that runs it, its sampling, and its counters.

The judge model is the policy's own engine (pass `engine=`, shared, never copied) or a second model loaded from a
directory (`model=`). Sampling is greedy by default; `samples` > 1 draws that many answers per judge call (at
`temperature`, default 0.7) and the judges average what they can parse. Unreadable answers become None and count in
`metrics()["parse_failures"]`; a request the engine cannot run (e.g. longer than its context) counts in
`request_errors`.

The task shown to the judge is the prompt string, or, when the caller passes context `prompt_messages` (the chat
before the completion, see tao_engine/scoring/chat_context.py), the user's text of that chat: a prompt already
rendered by the policy's chat template must not reach the judge with its control tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from tao_engine.engine.sampling_params import SamplingParams
from tao_engine.scoring.chat_context import per_item, task_text
from tao_engine.scoring.judges.prompts import DEFAULT_RUBRIC

DEFAULT_SAMPLED_TEMPERATURE = 0.7
_COUNTERS = ("judge_calls", "judge_outputs", "parse_failures", "request_errors")


class JudgeEngine(Protocol):
    """What a judge needs from an engine: `tao_engine.engine.Engine.generate` over chat prompts."""

    def generate(self, prompts: Any, sampling: Any = None) -> Sequence[Any]: ...


class EngineJudge:
    """Base of the judges: builds the engine and sampling, runs prompts, keeps counters (see module docstring)."""

    name = "judge"
    extra_counters: tuple[str, ...] = ()  # a subclass's own counters, reported and reset with the common ones

    def __init__(
        self,
        model: str | Path | None = None,  # the judge model's directory (give this or engine)
        engine: JudgeEngine | None = None,  # Python only: an Engine to judge with, e.g. the policy's own
        *,
        rubric: str | None = None,  # what the judge is asked to assess (default: a correctness/helpfulness rubric)
        max_tokens: int = 256,  # of each judge answer
        samples: int = 1,  # judge answers per call, averaged (> 1 samples at temperature)
        temperature: float | None = None,  # unset: 0 (greedy) for one sample, 0.7 for several
        seed: int = 0,  # of the judge's sampling
        max_response_chars: int | None = 8000,  # longer replies are cut in the middle before judging
        engine_config: Mapping[str, Any] | None = None,  # EngineConfig keys for a judge loaded from model
    ) -> None:
        where = self.name
        if (model is None) == (engine is None):
            raise ValueError(f"{where}: give exactly one of model= (a judge model directory) or engine= (an Engine)")
        if engine is None:
            from tao_engine.engine import Engine, EngineConfig

            if not isinstance(model, (str, Path)):
                raise ValueError(f"{where}: model must be a model directory path, got {type(model).__name__}")
            engine = Engine(model, EngineConfig.from_dict(dict(engine_config or {})))
        elif engine_config is not None:
            raise ValueError(f"{where}: engine_config applies to a judge loaded from model=, not to a given engine")
        if not callable(getattr(engine, "generate", None)):
            raise TypeError(f"{where}: engine must have generate(prompts, sampling), got {type(engine).__name__}")
        if rubric is not None and (not isinstance(rubric, str) or not rubric.strip()):
            raise ValueError(f"{where}: rubric must be a non-empty string, got {rubric!r}")
        _check_int(where, "samples", samples, 1)
        _check_int(where, "max_tokens", max_tokens, 1)
        if max_response_chars is not None:
            _check_int(where, "max_response_chars", max_response_chars, 16)
        if temperature is None:
            temperature = 0.0 if samples == 1 else DEFAULT_SAMPLED_TEMPERATURE
        if samples > 1 and temperature == 0:
            raise ValueError(f"{where}: samples={samples} with temperature=0 gives {samples} identical answers; "
                             "set temperature > 0 or samples=1")
        try:
            self.sampling = SamplingParams(n=samples, temperature=temperature, max_tokens=max_tokens, seed=seed,
                                           logprobs=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        self.engine = engine
        self.rubric = rubric if rubric is not None else DEFAULT_RUBRIC
        self.max_response_chars = max_response_chars
        self._counters = self._fresh_counters()

    def _fresh_counters(self) -> dict[str, float]:
        return dict.fromkeys((*_COUNTERS, *self.extra_counters), 0)

    def run(self, user_messages: Sequence[str]) -> list[list[str] | None]:
        """One judge call per message (a single user turn); the answers of each, or None when the request failed."""
        if not user_messages:
            return []
        chats = [[{"role": "user", "content": m}] for m in user_messages]
        outputs = self.engine.generate(chats, self.sampling)
        if len(outputs) != len(chats):
            raise RuntimeError(f"{self.name}: the engine returned {len(outputs)} outputs for {len(chats)} prompts")
        answers: list[list[str] | None] = []
        for output in outputs:
            self._counters["judge_calls"] += 1
            if getattr(output, "error", None):
                self._counters["request_errors"] += 1
                answers.append(None)
                continue
            texts = [sample.text for sample in output.samples]
            self._counters["judge_outputs"] += len(texts)
            answers.append(texts)
        return answers

    def task_texts(self, prompts: Sequence[str], items: Sequence[Any], what: str,
                   context: Mapping[str, Any]) -> list[str]:
        """The task each prompt shows the judge (see module docstring), one per item (a completion or a group)."""
        if len(prompts) != len(items):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(items)} {what}")
        return [task_text(p, m, self.name) for p, m in zip(prompts, per_item(context, len(prompts), self.name),
                                                           strict=True)]

    def count_parse_failure(self, count: int = 1) -> None:
        self._counters["parse_failures"] += count

    def count(self, key: str, amount: float = 1) -> None:
        self._counters[key] += amount  # a KeyError here means the key is missing from extra_counters

    def metrics(self) -> dict[str, float]:
        """Counters since the last call (then reset), plus parse_failure_rate = parse_failures / judge_outputs."""
        out = {key: float(value) for key, value in self._counters.items()}
        outputs = out["judge_outputs"]
        out["parse_failure_rate"] = out["parse_failures"] / outputs if outputs else 0.0
        self._counters = self._fresh_counters()
        return out


class RatingJudge(EngineJudge):
    """A judge whose answers rate on the scale [min_score, max_score] (pointwise and group judges)."""

    def __init__(
        self,
        model: str | Path | None = None,
        engine: JudgeEngine | None = None,
        *,
        rubric: str | None = None,
        min_score: float = 0,  # the low end of the rating scale
        max_score: float = 10,  # the high end of the rating scale
        max_tokens: int = 256,
        samples: int = 1,
        temperature: float | None = None,
        seed: int = 0,
        max_response_chars: int | None = 8000,
        engine_config: Mapping[str, Any] | None = None,
    ) -> None:
        check_scale(self.name, min_score, max_score)
        super().__init__(model, engine, rubric=rubric, max_tokens=max_tokens, samples=samples,
                         temperature=temperature, seed=seed, max_response_chars=max_response_chars,
                         engine_config=engine_config)
        self.min_score, self.max_score = min_score, max_score


def mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def _check_int(where: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {value!r}")


def check_scale(where: str, min_score: float, max_score: float) -> None:
    for name, value in (("min_score", min_score), ("max_score", max_score)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    if not min_score < max_score:
        raise ValueError(f"{where}: min_score ({min_score}) must be below max_score ({max_score})")
