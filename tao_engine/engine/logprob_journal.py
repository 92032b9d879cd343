"""Per-token log-probs kept as the sampler's tensors until someone reads them.

Each step appends its sampled rows' (logprob, raw_logprob) [B] to two growing fp32 tensors (a slice copy, no host
sync) and remembers which sample each row extends. `flush` converts everything pending with one `.tolist()` per
tensor and appends the values to their samples' lists. The engine flushes when `step()` returns (its caller may read
any output) and once at the end of `generate()`, so a batch generation does no per-step `.tolist()` of log-probs.
"""

from __future__ import annotations

import torch

from tao_engine.engine.outputs import SampleOutput

# Entries held before a flush is forced (8 MiB of the two tensors): bounds memory in a very long generate() call.
MAX_PENDING = 1 << 20


class LogprobJournal:
    def __init__(self) -> None:
        self._logprobs = torch.empty(0)
        self._raw = torch.empty(0)
        self._owners: list[SampleOutput] = []

    def __len__(self) -> int:
        return len(self._owners)

    def append(self, logprobs: torch.Tensor, raw_logprobs: torch.Tensor, owners: list[SampleOutput]) -> None:
        """logprobs, raw_logprobs [B] fp32, row b extending owners[b]."""
        start, end = len(self._owners), len(self._owners) + len(owners)
        if end > self._logprobs.numel() or self._logprobs.device != logprobs.device:
            if start and self._logprobs.device != logprobs.device:
                self.flush()
                start, end = 0, len(owners)
            capacity = max(end, 2 * self._logprobs.numel(), 1024)
            grown = torch.empty(capacity, dtype=torch.float32, device=logprobs.device)
            grown_raw = torch.empty_like(grown)
            grown[:start] = self._logprobs[:start]
            grown_raw[:start] = self._raw[:start]
            self._logprobs, self._raw = grown, grown_raw
        self._logprobs[start:end] = logprobs
        self._raw[start:end] = raw_logprobs
        self._owners.extend(owners)
        if end >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Append every pending value to its sample's `logprobs` and `raw_logprobs` lists, in step order."""
        n = len(self._owners)
        if n == 0:
            return
        logprobs = self._logprobs[:n].tolist()
        raw = self._raw[:n].tolist()
        for owner, lp, rlp in zip(self._owners, logprobs, raw, strict=True):
            owner.logprobs.append(lp)
            owner.raw_logprobs.append(rlp)
        self._owners.clear()
