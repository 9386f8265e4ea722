"""A per-workspace pacer that keeps requests under Braze's limit instead of reacting to 429s.

Braze limits requests per workspace (docs/braze.md#limits): by default 3,000 per 3 s on
`/users/track` and 20,000 per minute on `/users/delete` and its siblings, but contracts differ and
other producers (Cloud Data Ingestion, other integrations, another Masivo process) draw from the
same budget. Every answer says what is left (docs/braze.md#rate-limit-headers), so the pacer
starts from a configured or default limit and then follows Braze: it adopts the announced
`X-RateLimit-Limit` (never above a limit the account configured), measures from `-Remaining` how
much of each window other producers take and leaves that to them, and pauses until `-Reset`
when the budget runs out anyway.

Whether Braze's window is fixed, sliding or a leaky bucket is not documented; the local emulator
uses fixed windows aligned to multiples of W since the epoch. A pacer that is safe against
*every* window alignment is therefore needed, and that is what `RateLimiter` guarantees (proof
in its docstring) for as long as its limit stays the same.

Limits are per workspace, so one limiter must be shared by every flow run in the process,
whatever event loop or thread it runs on: `LimiterRegistry` hands out the shared instance,
keyed by `workspace_key(endpoint, api_key)` (the key only as a hash). Coordination *between*
processes is Prefect's global rate limit (docs/prefect.md); this module is the local pacer
behind it.
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
    "TRACK_BUCKET",
    "LimiterRegistry",
    "RateLimiter",
    "limiters",
    "workspace_key",
]

#: Registry bucket names: one budget per workspace for /users/track, one for /users/delete and its
#: siblings (docs/braze.md#limits).
TRACK_BUCKET = "track"
DELETE_BUCKET = "delete"

#: Responses whose reset lies this many seconds apart belong to different windows. Braze's reset
#: is whole seconds: an epoch is exact, a "seconds left" value jitters by up to one second.
_SAME_WINDOW_SECONDS = 1.0


def workspace_key(base_url: str, api_key: str) -> str:
    """An opaque, loggable key for one Braze workspace: the endpoint plus a hash of the API key.

    Braze enforces limits per workspace, not per key (docs/braze.md#limits), but the workspace id
    is not known to us; the key is the closest proxy. Only a truncated SHA-256 of it is kept, so
    the result may appear in logs and Prefect limit names.
    """
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]
    return f"{base_url.rstrip('/').lower()}#{digest}"  # host names are case-insensitive


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
    whatever its alignment (fixed windows since the epoch, sliding windows alike). The proof
    holds while N stays the same. When the pacer adopts a new N (below), the slots already
    started stay where they are and the new spacing applies from the next one, so the window
    around the change is not covered by it; the low-water pause and the 429 path are.

    Why the slack s: the bound is on *scheduled* start times. A sleeper may wake late (event
    loop lag) and the request reaches Braze after a variable latency; any such delay shorter
    than s keeps the N-per-W bound on the times Braze sees, since those starts come from a
    window of length W + s of scheduled times. Larger delays (e.g. a TLS handshake on a cold
    connection) can exceed it; the 429 path (`pause_for`) handles that rare case.

    **Following Braze** (`observe`, docs/braze.md#rate-limit-headers). N is not fixed:

    - the workspace's limit is the announced `X-RateLimit-Limit` once one arrives (before that,
      the `limit` given at construction), never above `ceiling` when one is configured;
    - other producers' share is measured per window: when a response shows a new reset, the
      window before it is closed with `others = limit - lowest remaining - our answers in it`,
      scaled to the whole window if our last answer in it came early (we had paused).
      A larger share is adopted at once, a smaller one halves the estimate per window (a
      competitor that pauses for a moment does not make us overshoot when it resumes);
    - N = workspace limit - others' share (at least a twentieth of the limit, so we never stall);
    - when `-Remaining`, less our requests still in flight, falls below `low_water` anyway,
      nobody starts before `-Reset`.

    Thread and event-loop safety: a reservation is a few arithmetic operations under a
    `threading.Lock`; the wait happens outside it with `asyncio.sleep` on the caller's own loop.
    No asyncio object is shared, so one limiter can serve several loops and threads at once.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        ceiling: int | None = None,
        burst: int | None = None,
        slack_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a pacer for `limit` requests per `window_seconds`.

        Args:
            limit: N, the number of requests Braze is assumed to allow per window until it
                announces its own limit.
            window_seconds: W, the window length in seconds (Braze announces no window).
            ceiling: the most requests per window this pacer ever uses, whatever Braze
                announces (an account's configured limit); None: follow Braze.
            burst: B, how many requests may start together after an idle period
                (default `max(1, min(N // 100, 30))`); must be below `limit`.
            slack_seconds: s, extra window length absorbed for wake-up and network jitter
                (default `min(0.02 * window_seconds, 0.05)`).
            clock: a monotonic clock in seconds (injectable for tests).
        """
        if not isinstance(limit, int) or limit < 2:
            raise ValueError("limit must be an integer >= 2")
        if ceiling is not None and (not isinstance(ceiling, int) or ceiling < 2):
            raise ValueError("ceiling must be an integer >= 2")
        if not (math.isfinite(window_seconds) and window_seconds > 0):
            raise ValueError("window_seconds must be a positive number")
        if burst is not None and not 1 <= burst < min(limit, ceiling or limit):
            raise ValueError("burst must be between 1 and limit - 1")
        if slack_seconds is None:
            slack_seconds = min(0.02 * window_seconds, 0.05)
        if not (math.isfinite(slack_seconds) and slack_seconds >= 0):
            raise ValueError("slack_seconds must be a non-negative number")
        #: the limit assumed until Braze announces one (construction argument)
        self.assumed = limit
        #: the configured upper bound, or None
        self.ceiling = ceiling
        self.window_seconds = float(window_seconds)
        self.slack_seconds = float(slack_seconds)
        self._fixed_burst = burst
        #: the last `X-RateLimit-Limit` Braze sent for this window length, or None
        self.announced: int | None = None
        #: requests per window other producers were seen to take from the workspace's budget
        self.others = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = -math.inf
        self._not_before = -math.inf
        # bumped when the spacing grows: waiters holding a slot of the faster pace take a new one
        self._generation = 0
        self._last_start = -math.inf  # the latest start a caller was promised
        # requests started (`acquire`) and not yet answered (`settle`): Braze's `remaining` in an
        # answer does not count them yet
        self._in_flight = 0
        self.interval = math.inf
        # the window the latest answers are about: its reset (clock time), how many of our
        # answers carried it, the lowest remaining they showed and the limit they announced
        self._win_reset: float | None = None
        self._win_answers = 0
        self._win_remaining = 0
        self._win_limit = 0
        self._win_last = 0.0
        self._retune()

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self.limit}, window_seconds={self.window_seconds}, burst={self.burst})"

    @property
    def workspace_limit(self) -> int:
        """The workspace's limit as far as we know: announced (or assumed), capped by `ceiling`."""
        known = self.announced if self.announced is not None else self.assumed
        return min(known, self.ceiling) if self.ceiling is not None else known

    def _retune(self) -> None:
        """Derive N, B, T and the low-water mark from what is known (called under the lock)."""
        workspace = self.workspace_limit
        limit = max(2, workspace // 20, min(workspace, workspace - self.others))
        burst = self._fixed_burst if self._fixed_burst is not None else max(1, min(limit // 100, 30))
        burst = max(1, min(burst, limit - 1))
        interval = (self.window_seconds + self.slack_seconds) / (limit - burst)
        if math.isfinite(self.interval) and interval > self.interval:
            # Slots handed out at the faster pace would all start before the slower one took
            # over (up to `concurrency` of them, bunched): their holders queue again instead, at
            # the new spacing, from the last start already promised (a `reserve` caller's, or a
            # waiter's that has left `acquire`), so nothing promised moves.
            self._generation += 1
            self._tat = min(self._tat, max(self._last_start, self._not_before))
        #: N: the requests per window this pacer lets start
        self.limit = limit
        self.burst = burst
        #: seconds between consecutive starts at the steady rate (T in the class docstring)
        self.interval = interval
        # Below this many remaining requests the shortfall cannot be ours alone: our own pacing
        # leaves about (N - B) * s / (W + s) unused in any window, so half of that (at least one,
        # i.e. "pause at zero", docs/braze.md#rate-limit-headers) signals other producers or a
        # lower real limit.
        own_leftover = (limit - burst) * self.slack_seconds / (self.window_seconds + self.slack_seconds)
        self.low_water = max(1, math.floor(0.5 * own_leftover))

    @property
    def rate(self) -> float:
        """The steady rate in requests per second, `(N - B) / (W + s)`."""
        return 1.0 / self.interval

    def _check_n(self, n: int) -> None:
        if not isinstance(n, int) or not 1 <= n <= self.burst:
            # n > B would let more than B start together and break the bound above.
            raise ValueError(f"n must be between 1 and burst ({self.burst})")

    def _reserve(self, n: int, *, promise: bool = False) -> tuple[float, float, int]:
        """Take n slots; return (scheduled start, now, generation) in clock time."""
        with self._lock:
            now = self._clock()
            base = max(self._tat, now)
            self._tat = base + n * self.interval
            # == tat - B*T, written so that an idle bucket (base == now) yields exactly `now`
            start = max(now, base + (n - self.burst) * self.interval, self._not_before)
            if promise:
                self._promise(start)
            return start, now, self._generation

    def _promise(self, start: float) -> None:
        self._last_start = max(self._last_start, start)

    def reserve(self, n: int = 1) -> float:
        """Reserve `n` slots now and return how many seconds to wait before starting them.

        The non-sleeping half of `acquire`, for synchronous callers and tests. Unlike
        `acquire`, it cannot notice a `pause_for` that arrives while the caller waits.
        """
        self._check_n(n)
        start, now, _ = self._reserve(n, promise=True)
        return start - now

    async def acquire(self, n: int = 1) -> float:
        """Wait until `n` requests may start; return the seconds waited.

        Slots are handed out in arrival order (first come, first served across all threads and
        loops). If `pause_for` moves the earliest start past a slot while its holder sleeps, or
        the pacer slows down meanwhile (`observe`), the holder takes a new slot instead of
        starting early. A cancelled waiter's slot stays spent, which only makes the pacing more
        conservative.
        """
        self._check_n(n)
        waited = 0.0
        while True:
            start, now, generation = self._reserve(n)
            delay = start - now
            if delay > 0:
                await asyncio.sleep(delay)
                waited += delay
            with self._lock:
                if start >= self._not_before and generation == self._generation:
                    self._promise(start)
                    self._in_flight += 1
                    return waited

    def settle(self) -> None:
        """Count one request started with `acquire` as answered (or failed); call it before
        `observe`ing its answer, and in every case, once."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)

    def _pause_locked(self, now: float, seconds: float) -> None:
        until = now + seconds
        self._not_before = max(self._not_before, until)
        self._tat = max(self._tat, self._not_before)

    def pause_for(self, seconds: float) -> None:
        """Let nobody start before `now + seconds` (used on a 429's retry-after).

        Waiters already sleeping for an earlier slot re-queue behind the pause; the bound keeps
        holding because `tat` is moved to the end of the pause as well.
        """
        if not (math.isfinite(seconds) and seconds > 0):
            return
        with self._lock:
            self._pause_locked(self._clock(), seconds)

    def observe(self, *, limit: int | None = None, remaining: int | None = None, reset_in: float | None = None) -> None:
        """Feed Braze's `X-RateLimit-Limit` / `-Remaining` / `-Reset` of one response.

        Call it once for every answer that carries them (429s too: Braze counts them), after
        `settle`. Adopts the announced limit, measures other producers' share per window (class
        docstring) and, when fewer than `low_water` requests remain beyond those still in
        flight, pauses until the reset Braze announced. A reset
        further away than one window belongs to a longer limit (an hourly one on some plans,
        docs/braze.md#limits): its values say nothing about W, so only the pause applies, capped
        at one window (the next responses or a 429 keep us slow). Unknown values are ignored.
        """
        window = self.window_seconds
        longer = reset_in is not None and reset_in > window + _SAME_WINDOW_SECONDS
        with self._lock:
            now = self._clock()
            retune = False
            if limit is not None and limit >= 1 and not longer and limit != self.announced:
                self.announced = limit
                retune = True
            if remaining is not None and reset_in is not None and not longer:
                retune = self._count_answer(now, now + reset_in, remaining) or retune
            if retune:
                self._retune()
            # the requests still in flight reach Braze after this answer's count was taken
            if (
                remaining is not None
                and reset_in is not None
                and remaining - self._in_flight < self.low_water
                and reset_in > 0
            ):
                self._pause_locked(now, min(reset_in, window))

    def _count_answer(self, now: float, reset_at: float, remaining: int) -> bool:
        """Count one answer in its window; True when a closed window changed `others`."""
        known = self.announced if self.announced is not None else self.assumed
        if self._win_reset is not None:
            ahead = reset_at - self._win_reset
            if -_SAME_WINDOW_SECONDS < ahead < _SAME_WINDOW_SECONDS and not (
                ahead > 0.25 and remaining > self._win_remaining  # sub-second windows: a refill
            ):
                self._win_answers += 1
                self._win_remaining = min(self._win_remaining, remaining)
                self._win_limit = known
                self._win_last = now
                return False
            if ahead <= -_SAME_WINDOW_SECONDS:
                return False  # a late answer about an earlier window
        changed = False
        if self._win_reset is not None:
            # What the closed window's budget went to, beyond our own answers in it. The error is
            # about the requests in flight at its end (their answers came after the next window's).
            seen = max(0, self._win_limit - self._win_remaining - self._win_answers)
            # Our last answer may have come early in the window (we paused at low water): what
            # the others took by then, spread over the whole window, is their share of it.
            elapsed = self.window_seconds - (self._win_reset - self._win_last)
            if 0 < elapsed < self.window_seconds:
                seen = min(self._win_limit, round(seen * self.window_seconds / max(elapsed, self.window_seconds / 4)))
            estimate = seen if seen >= self.others else max(seen, self.others // 2)
            changed = estimate != self.others
            self.others = estimate
        self._win_reset = reset_at
        self._win_answers = 1
        self._win_remaining = remaining
        self._win_limit = known
        self._win_last = now
        return changed


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
        self,
        workspace: str,
        bucket: str,
        limit: int,
        window_seconds: float,
        *,
        ceiling: int | None = None,
        burst: int | None = None,
    ) -> RateLimiter:
        """Return the limiter for `(workspace, bucket)`, creating it on first use.

        Args:
            workspace: an opaque key, e.g. `workspace_key(endpoint, api_key)`; never a raw key.
            bucket: which Braze budget: `TRACK_BUCKET` ("track") or `DELETE_BUCKET` ("delete").
            limit: requests per window assumed until Braze announces its limit.
            window_seconds: the window length.
            ceiling: the configured upper bound (see `RateLimiter`), or None.
            burst: optional burst allowance (see `RateLimiter`).

        Returns:
            The shared limiter. If `limit`, `window_seconds`, `ceiling` or an explicit `burst`
            differ from the existing limiter's (the account's configuration changed), a new
            limiter replaces it; holders of the old one keep it until they ask again. What a
            limiter learned from Braze is not configuration: asking again keeps it.
        """
        key = (workspace, bucket)
        with self._lock:
            current = self._limiters.get(key)
            if (
                current is not None
                and current.assumed == limit
                and current.window_seconds == float(window_seconds)
                and current.ceiling == ceiling
                and current._fixed_burst == burst
            ):
                return current
            limiter = RateLimiter(limit, window_seconds, ceiling=ceiling, burst=burst)
            self._limiters[key] = limiter
            return limiter

    def snapshot(self) -> list[dict[str, object]]:
        """What each limiter knows (benchmarks and diagnostics): workspace key, bucket, the
        announced limit, other producers' measured share and the pace in use."""
        with self._lock:
            items = list(self._limiters.items())
        return [
            {
                "workspace": workspace,
                "bucket": bucket,
                "announced": limiter.announced,
                "ceiling": limiter.ceiling,
                "others": limiter.others,
                "limit": limiter.limit,
            }
            for (workspace, bucket), limiter in items
        ]

    def clear(self) -> None:
        """Forget every limiter (tests)."""
        with self._lock:
            self._limiters.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._limiters)


#: The process-wide registry.
limiters = LimiterRegistry()
