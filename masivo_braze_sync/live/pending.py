"""The consumers of one account that have something to look at, and when.

A wake-up is a hint that a change committed; it is readable only once it is below the capture
horizon, which an older open transaction anywhere in the cluster can hold back. So a consumer
stays pending until a read finds nothing *and* nothing committed waits after its cursor
(docs/live.md#wake-ups); until then it is looked at again with a growing delay.
"""

from __future__ import annotations

import time

from masivo_braze_sync.live.backoff import Backoff


class Pending:
    """Due times per consumer of one account (monotonic clock).

    A wake-up that arrives while a consumer is being looked at (`looking` ... `done`/`held`) is
    kept whatever that look finds: its change may have committed after the look's read, and
    forgetting it would leave the change until the next sweep.
    """

    def __init__(self, retry_min: float, retry_max: float) -> None:
        self._due: dict[str, float] = {}
        #: the earliest wake-up per consumer since its current look began
        self._woken: dict[str, float] = {}
        self._retry: dict[str, Backoff] = {}
        self._min, self._max = retry_min, retry_max

    def wake(self, consumer: str, delay: float = 0.0) -> None:
        """Look at `consumer` within `delay` seconds (sooner if it was due sooner)."""
        due = time.monotonic() + delay
        self._due[consumer] = min(self._due.get(consumer, due), due)
        self._woken[consumer] = min(self._woken.get(consumer, due), due)

    def looking(self, consumer: str) -> None:
        """A look at `consumer` begins: wake-ups from now on outlive what it finds."""
        self._woken.pop(consumer, None)

    def due(self, now: float | None = None) -> set[str]:
        """The consumers due now."""
        now = time.monotonic() if now is None else now
        return {c for c, t in self._due.items() if t <= now}

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is pending."""
        return min(self._due.values(), default=None)

    def held(self, consumer: str) -> None:
        """Something committed is not readable yet: look again after a growing delay."""
        backoff = self._retry.setdefault(consumer, Backoff(self._min, self._max))
        due = time.monotonic() + backoff.grow()
        self._due[consumer] = min(due, self._woken.pop(consumer, due))

    def again(self, consumer: str) -> None:
        """The look made progress and more waits: look again in the next round."""
        self._woken.pop(consumer, None)
        self._due[consumer] = time.monotonic()
        if consumer in self._retry:
            self._retry[consumer].reset()

    def later(self, consumer: str, delay: float) -> None:
        """Look again after `delay` (the lock was busy, the account failed)."""
        self._woken.pop(consumer, None)
        self._due[consumer] = time.monotonic() + delay

    def done(self, consumer: str) -> None:
        """Caught up: nothing to look at until the next wake-up (one during the look counts) or sweep."""
        woken = self._woken.pop(consumer, None)
        if woken is None:
            self._due.pop(consumer, None)
        else:
            self._due[consumer] = woken
        if consumer in self._retry:
            self._retry[consumer].reset()

    def __contains__(self, consumer: str) -> bool:
        return consumer in self._due
