"""A per-workspace pacer that keeps requests under Braze's limit instead of reacting to 429s.

Braze limits requests per workspace: by default 3,000 per 3 s on `/users/track` and 20,000 per
minute on `/users/delete` and its sibling endpoints (docs/braze.md#rate-limits). Whether its window is
fixed, sliding or a leaky bucket is unknown; the local emulator uses fixed
windows aligned to multiples of W since the epoch. A pacer that is safe against *every* window
alignment is therefore needed, and that is what `RateLimiter` guarantees (proof in its
docstring).

Limits are per workspace, so one limiter must be shared by every flow run in the process, whatever
event loop or thread it runs on: `LimiterRegistry` hands out the shared instance, keyed by
`workspace_key(endpoint, api_key)` (the key only as a hash). Coordination *between* processes is
Prefect's global rate limit (docs/prefect.md#global-concurrency-limits); this module is the local
pacer behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections.abc import Callable

__all__ = [
    "DELETE_BUCKET",
    "DELETE_LIMIT",
    "DELETE_WINDOW_SECONDS",
    "TRACK_BUCKET",
    "TRACK_LIMIT",
    "TRACK_WINDOW_SECONDS",
    "LimiterRegistry",
    "RateLimiter",
    "limiters",
    "workspace_key",
]

#: Registry bucket names: one budget per workspace for /users/track, one for /users/delete and its
#: siblings (docs/braze.md#deleting-users).
TRACK_BUCKET = "track"
DELETE_BUCKET = "delete"
#: Braze's default `/users/track` limit: 3,000 requests per 3 s (docs/braze.md#rate-limits). Configurable per account.
TRACK_LIMIT = 3_000
TRACK_WINDOW_SECONDS = 3.0
#: Braze's default `/users/delete` limit: 20,000 requests per minute, shared with alias/identify/merge
#: (docs/braze.md#deleting-users).
DELETE_LIMIT = 20_000
DELETE_WINDOW_SECONDS = 60.0


def workspace_key(base_url: str, api_key: str) -> str:
    """An opaque, loggable key for one Braze workspace: the endpoint plus a hash of the API key.

    Braze enforces limits per workspace, not per key (docs/braze.md#rate-limits), but the workspace id is
    not known to us; the key is the closest proxy. Only a truncated SHA-256 of it is kept, so the
    result may appear in logs and Prefect limit names.
    """
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]
    return f"{base_url.rstrip('/')}#{digest}"


class RateLimiter:
    """GCRA (virtual-scheduling leaky bucket) pacer: at most `limit` starts in any `window_seconds`.

    Requests are spaced `interval = (W + s) / (N - B)` apart, with an allowance of `B` requests
    that may start together after an idle period, where N is `limit`, W `window_seconds`, B
    `burst` (default `max(1, min(N // 100, 30))`) and s `slack_seconds` (default
    `min(0.02 * W, 0.05)`). For 3,000 per 3 s that is B = 30, interval ≈ 1.027 ms, a steady rate
    of ≈ 974 requests/s (97.4 % of the limit).

    State: `tat`, the theoretical arrival time (when the bucket would be empty again), and
    `not_before` (set by `pause_for`). A reservation of n slots (1 ≤ n ≤ B) at clock time `now`
    does, under one lock::

        base  = max(tat, now)
        tat   = base + n * T
        start = max(now, tat - B * T, not_before)

    and `pause_for` keeps the invariant `tat >= not_before` by setting `tat = max(tat, P)`.

    **Bound.** In any closed interval [a, b] the reservations starting in it hold at most
    `B + (b - a) / T` slots. Proof: `now` never decreases (monotonic clock, read under the lock),
    `tat` only grows and `not_before` never decreases, so start times are non-decreasing in
    reservation order. Let k be the first and m the last reservation starting in [a, b]; the
    reservations k..m are then exactly those starting in [a, b], holding c slots in total. Each
    reservation raises `tat` by at least its n*T, so `tat_m ≥ base_k + c*T` (tat after m).
    Hence `start_m ≥ tat_m - B*T ≥ base_k + (c - B)*T`. And `start_k ≤ base_k`, because
    `now_k ≤ base_k`, `tat_k - B*T ≤ base_k - (B - n_k)*T ≤ base_k` (n ≤ B) and
    `not_before ≤ tat_before_k ≤ base_k` (the invariant). So `b - a ≥ start_m - start_k ≥
    (c - B)*T`, i.e. `c ≤ B + (b - a)/T`. With `b - a = W + s` this gives `c ≤ B + (N - B) = N`:
    at most N slots start in ANY window of length W + s, hence in any window of length W,
    whatever its alignment (fixed windows since the epoch, sliding windows alike).

    Why the slack s: the bound is on *scheduled* start times. A sleeper may wake late (event
    loop lag) and the request reaches Braze after a variable latency; any such delay shorter
    than s keeps the N-per-W bound on the times Braze sees, since those starts come from a
    window of length W + s of scheduled times. Larger delays (e.g. a TLS handshake on a cold
    connection) can exceed it; the 429 path (`pause_for`) handles that rare case.

    Thread and event-loop safety: a reservation is a few arithmetic operations under a
    `threading.Lock`; the wait happens outside it with `asyncio.sleep` on the caller's own loop.
    No asyncio object is shared, so one limiter can serve several loops and threads at once.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        burst: int | None = None,
        slack_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a pacer for `limit` requests per `window_seconds`.

        Args:
            limit: N, the number of requests Braze allows per window.
            window_seconds: W, the window length in seconds.
            burst: B, how many requests may start together after an idle period
                (default `max(1, min(limit // 100, 30))`); must be below `limit`.
            slack_seconds: s, extra window length absorbed for wake-up and network jitter
                (default `min(0.02 * window_seconds, 0.05)`).
            clock: a monotonic clock in seconds (injectable for tests).
        """
        if not isinstance(limit, int) or limit < 2:
            raise ValueError("limit must be an integer >= 2")
        if not (math.isfinite(window_seconds) and window_seconds > 0):
            raise ValueError("window_seconds must be a positive number")
        if burst is None:
            burst = max(1, min(limit // 100, 30))
        if not 1 <= burst < limit:
            raise ValueError("burst must be between 1 and limit - 1")
        if slack_seconds is None:
            slack_seconds = min(0.02 * window_seconds, 0.05)
        if not (math.isfinite(slack_seconds) and slack_seconds >= 0):
            raise ValueError("slack_seconds must be a non-negative number")
        self.limit = limit
        self.window_seconds = float(window_seconds)
        self.burst = burst
        self.slack_seconds = float(slack_seconds)
        #: seconds between consecutive starts at the steady rate (T in the class docstring)
        self.interval = (self.window_seconds + self.slack_seconds) / (limit - burst)
        # Below this many remaining requests the shortfall cannot be ours alone: our own pacing
        # leaves about (N - B) * s / (W + s) unused in any window, so half of that (at least one,
        # i.e. "pause at zero", docs/braze.md#rate-limit-headers) signals other producers or a lower real limit.
        own_leftover = (limit - burst) * self.slack_seconds / (self.window_seconds + self.slack_seconds)
        self.low_water = max(1, math.floor(0.5 * own_leftover))
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = -math.inf
        self._not_before = -math.inf

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self.limit}, window_seconds={self.window_seconds}, burst={self.burst})"

    @property
    def rate(self) -> float:
        """The steady rate in requests per second, `(N - B) / (W + s)`."""
        return 1.0 / self.interval

    def _check_n(self, n: int) -> None:
        if not isinstance(n, int) or not 1 <= n <= self.burst:
            # n > B would let more than B start together and break the bound above.
            raise ValueError(f"n must be between 1 and burst ({self.burst})")

    def _reserve(self, n: int) -> tuple[float, float]:
        """Take n slots; return (scheduled start, now) in clock time."""
        with self._lock:
            now = self._clock()
            base = max(self._tat, now)
            self._tat = base + n * self.interval
            # == tat - B*T, written so that an idle bucket (base == now) yields exactly `now`
            start = max(now, base + (n - self.burst) * self.interval, self._not_before)
            return start, now

    def reserve(self, n: int = 1) -> float:
        """Reserve `n` slots now and return how many seconds to wait before starting them.

        The non-sleeping half of `acquire`, for synchronous callers and tests. Unlike
        `acquire`, it cannot notice a `pause_for` that arrives while the caller waits.
        """
        self._check_n(n)
        start, now = self._reserve(n)
        return start - now

    async def acquire(self, n: int = 1) -> float:
        """Wait until `n` requests may start; return the seconds waited.

        Slots are handed out in arrival order (first come, first served across all threads and
        loops). If `pause_for` moves the earliest start past a slot while its holder sleeps, the
        holder takes a new slot after the pause instead of starting early. A cancelled waiter's
        slot stays spent, which only makes the pacing more conservative.
        """
        self._check_n(n)
        waited = 0.0
        while True:
            start, now = self._reserve(n)
            delay = start - now
            if delay > 0:
                await asyncio.sleep(delay)
                waited += delay
            with self._lock:
                if start >= self._not_before:
                    return waited

    def pause_for(self, seconds: float) -> None:
        """Let nobody start before `now + seconds` (used on a 429's retry-after).

        Waiters already sleeping for an earlier slot re-queue behind the pause; the bound keeps
        holding because `tat` is moved to the end of the pause as well.
        """
        if not (math.isfinite(seconds) and seconds > 0):
            return
        with self._lock:
            until = self._clock() + seconds
            self._not_before = max(self._not_before, until)
            self._tat = max(self._tat, self._not_before)

    def observe(self, *, remaining: int | None, reset_in: float | None) -> None:
        """Feed Braze's `X-RateLimit-Remaining` / `-Reset` from a response (docs/braze.md#rate-limit-headers).

        Other producers (other integrations, CDI syncs, other processes) draw from the same
        workspace budget (docs/braze.md#rate-limits), so when Braze says fewer than `low_water` requests
        remain, pause until the reset Braze announced. The pause is capped at one window: a
        longer reset belongs to a different (e.g. hourly) limit, and the next responses or a
        429 will keep us slow. Unknown values are ignored.
        """
        if remaining is None or reset_in is None or remaining >= self.low_water:
            return
        self.pause_for(min(reset_in, self.window_seconds))


class LimiterRegistry:
    """One `RateLimiter` per (workspace, bucket) for the whole process.

    Flow runs of the same account share their workspace's budget even when they run on
    different event loops or threads. Thread-safe.
    """

    def __init__(self) -> None:
        """Create an empty registry."""
        self._lock = threading.Lock()
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def get(
        self, workspace: str, bucket: str, limit: int, window_seconds: float, *, burst: int | None = None
    ) -> RateLimiter:
        """Return the limiter for `(workspace, bucket)`, creating it on first use.

        Args:
            workspace: an opaque key, e.g. `workspace_key(endpoint, api_key)`; never a raw key.
            bucket: which Braze budget: `TRACK_BUCKET` ("track") or `DELETE_BUCKET` ("delete").
            limit: requests allowed per window.
            window_seconds: the window length.
            burst: optional burst allowance (see `RateLimiter`).

        Returns:
            The shared limiter. If `limit`, `window_seconds` or an explicit `burst` differ
            from the existing limiter's (the account's configuration changed), a new limiter
            replaces it; holders of the old one keep it until they ask again.
        """
        key = (workspace, bucket)
        with self._lock:
            current = self._limiters.get(key)
            if (
                current is not None
                and current.limit == limit
                and current.window_seconds == float(window_seconds)
                and (burst is None or current.burst == burst)
            ):
                return current
            limiter = RateLimiter(limit, window_seconds, burst=burst)
            self._limiters[key] = limiter
            return limiter

    def clear(self) -> None:
        """Forget every limiter (tests)."""
        with self._lock:
            self._limiters.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._limiters)


#: The process-wide registry.
limiters = LimiterRegistry()
