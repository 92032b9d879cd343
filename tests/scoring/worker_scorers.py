"""Scorers for the worker-process tests: importable by a fresh interpreter, so they can run under `timeout_s`."""

from __future__ import annotations

import os
import time


def hang_on_stuck(prompts, completions, **context):
    """Never returns when a completion says "stuck"; 1.0 per candidate otherwise."""
    if "stuck" in completions:
        time.sleep(3600)
    return [1.0] * len(completions)


def worker_pid(prompts, completions, **context):
    """The scoring process's pid, as every candidate's score: which process ran the call."""
    return [float(os.getpid())] * len(completions)


class CountingGroups:
    """A stateful group scorer: its counter lives wherever it runs, and comes back through metrics()."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def score_groups(self, prompts, groups, **context):
        self.calls += 1
        return [[float(len(c)) for c in g] for g in groups]

    def metrics(self):
        return {"calls": self.calls}


def hang_on_prompt(prompts, completions, **context):
    """Never returns for a batch holding a prompt that asks to "hang"; 0.5 per candidate otherwise."""
    if any("hang" in p for p in prompts):
        time.sleep(3600)
    return [0.5] * len(completions)
