"""Growing waits: for a change held behind the capture horizon, for an account that failed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """A delay that doubles on each `grow()` from `low` up to `high`, and `reset()`s to `low`."""

    low: float
    high: float
    current: float = 0.0

    def __post_init__(self) -> None:
        self.current = self.low

    def grow(self) -> float:
        """The delay to wait now; the next one is twice as long (at most `high`)."""
        delay = self.current
        self.current = min(self.high, self.current * 2)
        return delay

    def reset(self) -> None:
        """Back to the shortest delay (after a success)."""
        self.current = self.low
