"""A live session in a background thread (its own event loop), for tests that write meanwhile."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from masivo_braze_sync.db import Database
from masivo_braze_sync.live import BatchLine, LiveSession
from tests.throwaway_pg import throwaway_pg  # noqa: F401 - a fixture


class LiveThread:
    """Runs a `LiveSession` until `stop()`; `lines` collects its delivered micro-batches."""

    def __init__(self, **kwargs: object) -> None:
        self.lines: list[BatchLine] = []
        self.kwargs = kwargs
        self.session: LiveSession | None = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self, timeout: float = 20.0) -> LiveThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self.session is None or self.session.sweeps < 1:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the live session did not start listening"
            time.sleep(0.01)
        return self

    def _main(self) -> None:
        async def go() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.session = LiveSession(
                Database(os.environ["MASIVO_DATABASE_URL"]), on_batch=self.lines.append, **self.kwargs
            )
            await self.session.run(self._stop)

        try:
            asyncio.run(go())
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 60.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the live session did not stop"
        assert self.error is None, self.error


@pytest.fixture
def live(db: Database) -> Iterator[Callable[..., LiveThread]]:
    """Start a live session: `live(entities=[...], account_ids=[...])`; stopped at the end."""
    started: list[LiveThread] = []

    def start(**kwargs: object) -> LiveThread:
        t = LiveThread(**kwargs).start()
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `check` until it holds (generous deadlines only: no timing is asserted)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
