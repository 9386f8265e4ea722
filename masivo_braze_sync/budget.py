"""A rate budget shared by every process that sends to one Braze workspace.

The in-process pacer (`braze.ratelimit`) keeps one process under the workspace's limit. When
several processes (workers, or two flows on different machines) send to the same workspace, they
also draw from a shared budget: a token bucket held by a coordinator (Prefect's global
concurrency limits, wired in by the orchestration layer). The core only knows this protocol.

A shared bucket with `slots` tokens refilled at `decay` per second lets at most
`slots + decay * T` requests start in any span of T seconds, if each token is used the moment it
is taken. Tokens are taken a block at a time and spent over the following moments, so
`budget_shape` leaves room for that.
"""

from __future__ import annotations

from typing import Protocol


class SharedBudget(Protocol):
    """Something that hands out request slots shared across processes."""

    #: the most slots one `take` gets at once (callers take at most this many before sending)
    slots: int

    async def take(self, n: int) -> None:
        """Wait until `n` requests may start."""


def budget_shape(limit: int, window_seconds: float, *, block: int = 64) -> tuple[int, float]:
    """(slots, decay per second) of a shared bucket that keeps N requests per W seconds.

    The bucket holds one block, taken at once and then sent over about `block * W / N` seconds by
    the in-process pacer; one more block's worth is kept free for a block sent late (a busy
    machine, a slow database write before it). So the decay satisfies
    `2 * block + decay * W * (1 + block / N) <= N`: about 94% of the limit for Braze's 3,000 per
    3 s with blocks of 64.
    """
    slots = max(1, min(block, limit // 10 or 1))
    decay = max(0.01, (limit - 2 * slots) / (window_seconds * (1 + slots / limit)))
    return slots, decay


class BlockBudget:
    """A `SharedBudget` that takes from another one a block at a time and hands the slots out.

    A live micro-batch is often a single request; taking its one slot from the shared budget
    would cost a coordinator round trip per micro-batch. This takes `inner.slots` at once and
    spends them over the next `hold_seconds`. Slots still unused then are dropped, not kept: the
    shared bucket assumed they were used when taken, and only one late block fits in its margin
    (`budget_shape`). Dropped slots cannot be handed back (a decaying limit has no release); they
    return to everyone as the bucket decays.
    """

    def __init__(self, inner: SharedBudget, *, hold_seconds: float, clock=None) -> None:
        import time

        self.inner = inner
        self.slots = inner.slots
        self.hold_seconds = hold_seconds
        self._clock = clock or time.monotonic
        self._credit = 0
        self._taken_at = 0.0
        #: blocks taken from the shared budget (each one coordinator round trip or more)
        self.blocks = 0

    async def take(self, n: int) -> None:
        """Wait until `n` requests may start, drawing a new block only when the last is spent or stale."""
        if self._clock() - self._taken_at > self.hold_seconds:
            self._credit = 0
        if n <= self._credit:
            self._credit -= n
            return
        need = n - self._credit
        block = max(need, self.slots)
        await self.inner.take(block)
        self.blocks += 1
        self._taken_at = self._clock()
        self._credit = block - need
