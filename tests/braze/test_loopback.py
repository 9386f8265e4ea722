"""The client against a real HTTP server on loopback, from two threads with their own event loops.

A MockTransport cannot catch event-loop bugs (a connection pool or lock bound to the wrong loop),
so this drives real sockets: a small `http.server` thread that enforces Braze-style fixed windows
(aligned to multiples of W since the epoch, like the emulator) and answers with Braze's headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from masivo_braze_sync.braze import BrazeClient, BrazeSettings, RateLimiter, TrackResult
from masivo_braze_sync.errors import AuthenticationError

KEY = "loopback-key-0001"
LIMIT, WINDOW = 30, 0.5


class FixedWindowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.windows: dict[int, int] = {}
        self.accepted: list[float] = []
        self.refused = 0

    def admit(self) -> tuple[bool, int, float]:
        """Count one request in the current fixed window: (allowed, remaining, window end)."""
        now = time.time()
        window = math.floor(now / WINDOW)
        end = (window + 1) * WINDOW
        with self.lock:
            used = self.windows.get(window, 0)
            if used >= LIMIT:
                self.refused += 1
                return False, 0, end
            self.windows[window] = used + 1
            self.accepted.append(now)
            return True, LIMIT - used - 1, end


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Braze
    server: FixedWindowServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict, headers: dict[str, str]) -> None:
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length))
        if self.headers.get("authorization") != f"Bearer {KEY}":
            self._answer(401, {"message": "Invalid API key"}, {})
            return
        allowed, remaining, end = self.server.admit()
        if not allowed:
            wait = max(end - time.time(), 0.0)
            self._answer(429, {"message": "rate limited"}, {"x-ratelimit-retry-after": f"{wait:.3f}"})
            return
        headers = {"x-ratelimit-limit": str(LIMIT), "x-ratelimit-remaining": str(remaining)}
        headers["x-ratelimit-reset"] = f"{end:.3f}"  # the epoch form (docs/braze.md#rate-limit-headers)
        self._answer(201, {"message": "success", "attributes_processed": len(body.get("attributes", []))}, headers)


@pytest.fixture
def server() -> Iterator[FixedWindowServer]:
    srv = FixedWindowServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def url(srv: FixedWindowServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_two_loops_in_two_threads_share_one_workspace_budget(server: FixedWindowServer):
    # 30 ms of slack (the default for a 0.5 s window is 10 ms): thread-per-connection http.server
    # and fresh TCP connections at start-up add a few ms of jitter that Braze's real 3 s window
    # (50 ms default slack) would absorb.
    limiter = RateLimiter(LIMIT, WINDOW, slack_seconds=0.03)
    # answers only ever slow it (others' share measured from -remaining includes reordering noise)
    fastest_interval, burst = limiter.interval, limiter.burst
    settings = BrazeSettings(timeout_seconds=5, backoff_base_seconds=0.01, backoff_max_seconds=0.1, concurrency=8)
    per_thread = 45
    results: list[TrackResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    async def sender(thread_no: int) -> None:
        # one client per loop (docs/prefect.md#event-loops-and-http-clients); the limiter is shared across both loops
        async with BrazeClient(url(server), KEY, settings=settings, track_limiter=limiter, allow_local=True) as client:
            bodies = [
                json.dumps({"attributes": [{"external_id": f"t{thread_no}-{i}", "n": i}]}).encode()
                for i in range(per_thread)
            ]
            got = await asyncio.gather(*(client.track(b) for b in bodies))
        with lock:
            results.extend(got)

    def run(thread_no: int) -> None:
        try:
            asyncio.run(sender(thread_no))
        except BaseException as exc:
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - t0

    assert errors == []
    assert len(results) == 2 * per_thread
    assert all(r.status_code == 201 for r in results)
    # Pacing, not 429s, kept us under the limit; a stray 429 from loopback jitter is tolerated.
    assert sum(r.rate_limited for r in results) <= 2
    assert server.refused <= 2
    assert len(server.accepted) == 2 * per_thread
    # 90 requests at ≈ 29 per 0.51 s cannot finish faster than this
    assert elapsed >= (2 * per_thread - burst) * fastest_interval * 0.95
    assert max(server.windows.values()) <= LIMIT


def test_real_server_auth_failure_and_loop_reuse(server: FixedWindowServer):
    async def wrong_key() -> None:
        async with BrazeClient(url(server), "not-the-key", allow_local=True) as client:
            await client.track(b'{"attributes": []}')

    with pytest.raises(AuthenticationError) as info:
        asyncio.run(wrong_key())
    assert "not-the-key" not in str(info.value)

    client = BrazeClient(url(server), KEY, allow_local=True, track_limiter=RateLimiter(1000, 1.0))
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(client.track(b'{"attributes": []}')).status_code == 201
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(client.track(b'{"attributes": []}'))
        loop.run_until_complete(client.aclose())  # on the loop that owns the connection
    finally:
        loop.close()
