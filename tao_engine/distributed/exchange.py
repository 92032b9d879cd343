"""Collectives that carry a health flag, so that one failing rank ends the whole run with a clear error instead of
leaving the others waiting in a collective.

Every point where ranks meet in the TAO loop goes through `exchange(ctx, payload, phase)`: an all_gather of
(error or None, payload) from every rank. A rank whose code raised anywhere calls `exchange` once more with its error
(`run_guarded` does that); whichever `exchange` the healthy ranks are waiting in receives it, and they raise
`RankFailure` naming the rank, the phase and the error. Tensor collectives (the gradient all-reduce) only ever
follow a successful `exchange`, so no rank can be stranded in one. A rank that dies outright (killed, segfault) is
caught by the process group's timeout (`[distributed] timeout_s`), or sooner by the launcher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tao_engine.distributed.context import DistributedContext

T = TypeVar("T")


class RankFailure(RuntimeError):
    """Another rank of the run failed; this rank stops too."""


def exchange(ctx: DistributedContext, payload: Any, phase: str, error: str | None = None) -> list[Any]:
    """Every rank's `payload`, in rank order; raises `RankFailure` when any rank reports an error."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, (error, payload))
    failures = [(rank, err) for rank, (err, _) in enumerate(gathered) if err is not None]
    if failures:
        others = [(rank, err) for rank, err in failures if rank != ctx.rank]
        if error is not None and not others:
            return [p for _, p in gathered]  # only this rank failed: the caller re-raises its own error
        text = "; ".join(f"rank {rank}: {err}" for rank, err in failures)
        raise RankFailure(f"distributed run stopped at {phase!r} on rank {ctx.rank}: {text}")
    return [p for _, p in gathered]


def run_guarded(ctx: DistributedContext, fn: Callable[[], T], what: str = "run") -> T:
    """Run `fn`; when it raises, tell the other ranks (they raise RankFailure) before re-raising here. After `fn`
    returns, one last exchange waits for every rank (rank 0 may still be writing the final model)."""
    try:
        result = fn()
    except RankFailure:
        raise  # learned from an exchange: every rank already knows
    except (Exception, KeyboardInterrupt) as exc:
        message = f"{type(exc).__name__}: {exc}"
        exc.add_note(f"(raised on rank {ctx.rank} of {ctx.world_size}; the other ranks were told to stop)")
        try:
            exchange(ctx, None, f"{what} (failed)", error=message)
        except RankFailure as other:
            raise exc from other
        raise
    exchange(ctx, None, f"end of {what}")
    return result
