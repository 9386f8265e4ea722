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
