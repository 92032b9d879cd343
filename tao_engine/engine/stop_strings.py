"""Text of one sample as tokens arrive, with stop strings found even when they span token boundaries.

The decoded text grows by pieces; a stop string may start in an earlier piece and end in the newest one, so the
search covers the last `max(len(stop)) - 1` characters before the new piece too. While a sample runs, `visible()`
holds back that many trailing characters: they could still turn out to be the start of a stop string, and a
streaming client must never see text that is later cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tao_engine.tokenizer.decoding import IncrementalDecoder


@dataclass
class SampleText:
    decoder: IncrementalDecoder
    stop: tuple[str, ...] = ()
    include_stop_str: bool = False
    text: str = ""
    stopped_by: str | None = None
    _hold: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def push(self, token_id: int, check_stop: bool = True) -> str | None:
        """Add a token; returns the stop string it completed, if any (the text is then cut at the stop)."""
        return self._append(self.decoder.push(token_id), check_stop)

    def finish(self) -> None:
        """The sample ended: decode what the decoder held back (an incomplete UTF-8 character)."""
        if self.stopped_by is None:
            self._append(self.decoder.finish(), check_stop=True)

    def _append(self, piece: str, check_stop: bool) -> str | None:
        if not piece or self.stopped_by is not None:
            return None
        start = max(0, len(self.text) - self._hold)
        self.text += piece
        if not self.stop or not check_stop:
            return None
        found: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, start)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, s)
        if found is None:
            return None
        at, s = found
        self.text = self.text[: at + len(s)] if self.include_stop_str else self.text[:at]
        self.stopped_by = s
        return s

    def visible(self, finished: bool) -> str:
        """The text a streaming client may see now."""
        if finished or self.stopped_by is not None or not self.stop:
            return self.text
        return self.text[: max(0, len(self.text) - self._hold)]
