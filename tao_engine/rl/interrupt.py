"""Stopping a tune early, cleanly (Ctrl-C or SIGTERM).

The first signal asks the run to stop after the step in progress: the step finishes, a checkpoint is written, and
the run ends with `TuneInterrupted` naming it. A second signal abandons the step at once: if the step had not yet
changed the weights (no optimizer step), the state from before it is checkpointed, so nothing done is lost; if it
had, the step's update is half done and the previous checkpoint is the one to resume from. Either way the caller
learns which checkpoint holds the run (`tao-engine tune` prints how to resume and how to export it, exit 130).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TuneInterrupted(KeyboardInterrupt):
    """The run stopped on a signal. checkpoint: the checkpoint that holds it (None: no step finished)."""

    def __init__(self, why: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(why)
        self.why = why
        self.step = step  # the last step the checkpoint holds (0: none)
        self.checkpoint = checkpoint


class GracefulStop:
    """Installed around `TAO.run` (in the main thread) by `handling()`; the loop reads `requested` after each step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def handling(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[GracefulStop]:
        """SIGINT and SIGTERM set `requested`; a second one raises KeyboardInterrupt. Outside the main thread (where
        Python cannot install handlers) the default behaviour stays."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in signals}
        for s in signals:
            signal.signal(s, self._on_signal)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise KeyboardInterrupt(f"{name} again: the step is abandoned")
        self.signal_name = name
        print(f"\ntao: {name}: finishing this step, then writing a checkpoint (Ctrl-C again abandons the step)",
              file=sys.stderr, flush=True)
