"""Scorers that a TOML config names by import path (`tests.step_scorers:<Name>`) to make a run fail at a chosen
scorer call: how the tests stop a run mid-way, as a crash or a Ctrl-C would."""

from __future__ import annotations


class FailOnCall:
    """Rewards short completions; raises RuntimeError from call `call` on (1-based; from then on, so that the
    composite's prompt-by-prompt retry fails too)."""

    name = "fail_on_call"

    def __init__(self, call: int = 2) -> None:
        self.call = call
        self.calls = 0

    def score(self, prompts, completions, **context):
        self.calls += 1
        if self.calls >= self.call:
            raise RuntimeError(f"scorer failed on call {self.calls}, on purpose")
        return [1.0 / (1 + len(c)) for c in completions]


class InterruptOnCall(FailOnCall):
    """As FailOnCall, with KeyboardInterrupt: what Ctrl-C does mid-step."""

    name = "interrupt_on_call"

    def score(self, prompts, completions, **context):
        if self.calls + 1 == self.call:
            self.calls += 1
            raise KeyboardInterrupt
        return super().score(prompts, completions, **context)


class SameAnswerVote:
    """A group scorer whose answer key is "A" for every candidate (a vote that collapsed onto one answer), rewarding
    short completions so that groups still vary."""

    name = "same_answer_vote"

    def score_groups(self, prompts, groups, **context):
        return [[1.0 / (1 + len(c)) for c in group] for group in groups]

    def answer_keys(self, prompts, groups, **context):
        return [["A"] * len(group) for group in groups]


class SignalOnCall(FailOnCall):
    """Rewards short completions; on call `call` sends this process `times` SIGTERMs (what `kill` or a scheduler
    does to a tune; a second one is a user insisting)."""

    name = "signal_on_call"

    def __init__(self, call: int = 2, times: int = 1, once: str = "") -> None:
        super().__init__(call)
        self.times = times
        self.once = once  # a file: signal only if it does not exist yet (and create it), so a resumed run goes on

    def score(self, prompts, completions, **context):
        import os
        import signal
        from pathlib import Path

        self.calls += 1
        if self.calls == self.call and not (self.once and Path(self.once).exists()):
            if self.once:
                Path(self.once).touch()
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGTERM)
        return [1.0 / (1 + len(c)) for c in completions]
