"""The pacer follows the limit Braze announces, over real HTTP against the emulator.

Each test sends a fixed number of requests through `BrazeClient` to a workspace whose limit the
client was not told, and checks outcomes: everything delivered, the share of 429s, and what the
pacer adopted. Windows are 1 s (the emulator's reset is whole epoch seconds, like Braze's).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import replace

import orjson
import pytest

from masivo_braze_sync.braze import BrazeClient, BrazeSettings, RateLimiter
from masivo_braze_sync.emulator import EmulatorState, Workspace

WINDOW = 1.0
LATENCY = 0.01  # a network round trip: some requests are always in flight
_keys = itertools.count(1)


def workspace(emulator: EmulatorState, limit: int, **kwargs: object) -> Workspace:
    n = next(_keys)
    ws = Workspace(
        name=f"follow-{n}",
        api_key=f"follow-key-{n}",
        rate_limit=limit,
        rate_window_seconds=WINDOW,
        latency_seconds=LATENCY,
        **kwargs,
    )
    emulator.add_workspace(ws)
    return ws


def send(url: str, ws: Workspace, limiter: RateLimiter, requests: int, *, during=None) -> list[int]:
    """Send `requests` one-attribute bodies at once (16 in flight); return each one's 429 count.

    `during(i)` runs after the i-th answer (a test changes the workspace mid-run with it).
    """

    async def go() -> list[int]:
        settings = BrazeSettings(concurrency=16, max_retries=10)
        async with BrazeClient(url, ws.api_key, settings=settings, track_limiter=limiter, allow_local=True) as c:
            done = itertools.count(1)

            async def one(i: int) -> int:
                body = orjson.dumps({"attributes": [{"external_id": f"c{i}", "n": i}]})
                result = await c.track(body)
                if during is not None:
                    during(next(done))
                return result.rate_limited

            return await asyncio.gather(*(one(i) for i in range(requests)))

    return asyncio.run(go())


def per_window(times) -> list[int]:
    """Our admitted requests per emulator window, in order (the first and last may be partial)."""
    counts: dict[int, int] = {}
    for t in times:
        counts[int(t // WINDOW)] = counts.get(int(t // WINDOW), 0) + 1
    return [counts[k] for k in sorted(counts)]


def delivered(emulator: EmulatorState, ws: Workspace) -> int:
    return emulator.stats(ws.name).objects["attributes"]


def test_a_workspace_limit_below_the_assumed_one_is_adopted(emulator, emulator_url):
    ws = workspace(emulator, limit=40)
    limiter = RateLimiter(400, WINDOW)  # nothing configured: Braze's default, ten times too high
    refused = send(emulator_url, ws, limiter, 160)
    assert delivered(emulator, ws) == 160
    assert (limiter.announced, limiter.limit) == (40, 40)
    stats = emulator.stats(ws.name)
    assert stats.rate_limited == sum(refused)
    # the first window may cost a few, but no more than 1% of the requests plus those
    assert stats.rate_limited <= 2


def test_a_workspace_limit_above_the_assumed_one_is_used(emulator, emulator_url):
    ws = workspace(emulator, limit=120)
    limiter = RateLimiter(30, WINDOW)
    send(emulator_url, ws, limiter, 240)
    assert delivered(emulator, ws) == 240
    assert (limiter.announced, limiter.limit) == (120, 120)
    stats = emulator.stats(ws.name)
    assert stats.max_in_window > 60  # more than twice what was assumed went out in one window
    assert stats.rate_limited <= 2


def test_a_configured_limit_stays_an_upper_bound(emulator, emulator_url):
    ws = workspace(emulator, limit=120)
    limiter = RateLimiter(30, WINDOW, ceiling=30)
    send(emulator_url, ws, limiter, 60)
    assert delivered(emulator, ws) == 60
    assert limiter.announced == 120
    assert limiter.limit == 30
    stats = emulator.stats(ws.name)
    assert stats.max_in_window <= 30
    assert stats.rate_limited == 0


def test_a_competing_producer_keeps_its_half(emulator, emulator_url):
    # another producer takes 30 of the 60 requests of every window, evenly
    ws = workspace(emulator, limit=60, competing_per_second=30.0)
    limiter = RateLimiter(60, WINDOW)
    send(emulator_url, ws, limiter, 150)
    assert delivered(emulator, ws) == 150
    assert 20 <= limiter.others <= 34  # measured from x-ratelimit-remaining
    assert limiter.limit <= 40
    stats = emulator.stats(ws.name)
    windows = per_window(stats.request_times)
    assert max(windows[2:]) <= 34  # once measured: about our half, never the competitor's
    # the first window, before the competitor is measured, may cost a few; then next to none
    assert stats.rate_limited <= 4


def test_a_limit_braze_lowers_mid_run_is_followed_within_a_window(emulator, emulator_url):
    ws = workspace(emulator, limit=80)
    limiter = RateLimiter(80, WINDOW)
    lowered = threading.Event()
    at_change: list[int] = []

    def lower(i: int) -> None:
        if i == 100 and not lowered.is_set():
            emulator.add_workspace(replace(ws, rate_limit=30))  # Braze changes the workspace's limit
            at_change.append(emulator.stats(ws.name).rate_limited)
            lowered.set()

    send(emulator_url, ws, limiter, 190, during=lower)
    assert delivered(emulator, ws) == 190
    assert (limiter.announced, limiter.limit) == (30, 30)
    stats = emulator.stats(ws.name)
    # the window in which the limit fell can refuse the requests already in flight, no more
    assert stats.rate_limited - at_change[0] <= 4


@pytest.mark.parametrize("style", ["epoch", "delta"])
def test_both_reset_styles_are_followed(emulator, emulator_url, style):
    ws = workspace(emulator, limit=40, reset_header_style=style)
    limiter = RateLimiter(400, WINDOW)
    send(emulator_url, ws, limiter, 100)
    assert delivered(emulator, ws) == 100
    assert limiter.announced == 40
    # answers that arrive out of order can make a window look slightly used by others
    assert 36 <= limiter.limit <= 40
    assert emulator.stats(ws.name).rate_limited <= 2
