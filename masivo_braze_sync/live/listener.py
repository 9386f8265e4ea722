"""The change log's notifications, on one autocommit connection that survives Postgres restarts.

Notifications are hints, never the source of truth: one sent while this process was not
listening is lost. So the order is LISTEN, then ask for a sweep (look at every consumer once),
then act on notifications; and the same again after every reconnect (docs/live.md#wake-ups).
The connection stays in autocommit and runs nothing but LISTEN: a notification is delivered
between transactions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import psycopg

from masivo_braze_sync.capture import NOTIFY_CHANNEL
from masivo_braze_sync.live.backoff import Backoff

log = logging.getLogger(__name__)


class Listener:
    """Calls `on_change(entity, account_id)` per notification and `on_listening()` after each
    (re)connect, once LISTEN is in place, until `stop` is set."""

    def __init__(
        self,
        url: str,
        on_change: Callable[[str, str], None],
        on_listening: Callable[[], None],
        *,
        poll_seconds: float = 0.5,
    ) -> None:
        self.url = url
        self.on_change = on_change
        self.on_listening = on_listening
        #: how often the wait for notifications comes up to check `stop` (no query is sent)
        self.poll_seconds = poll_seconds
        self.reconnects = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`; reconnect with a growing delay when the connection drops."""
        backoff = Backoff(0.2, 5.0)
        first = True
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if not first:
                        self.reconnects += 1
                        log.info("live: listening again after a lost connection (reconnect %d)", self.reconnects)
                    first = False
                    backoff.reset()
                    self.on_listening()
                    while not stop.is_set():
                        async for note in conn.notifies(timeout=self.poll_seconds):
                            self._dispatch(note.payload)
            except Exception as exc:  # noqa: BLE001 - whatever ended it, listen again: the sweep after
                # the reconnect covers what was missed, and a listener left down would leave the
                # session on its slow sweeps without a word
                delay = backoff.grow()
                log.warning("live: notification connection lost (%s); retrying in %.1fs", type(exc).__name__, delay)
                await _sleep_unless(stop, delay)

    def _dispatch(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            entity, account_id = str(data["entity"]), str(data["account"])
        except (ValueError, KeyError, TypeError):
            log.warning("live: ignored a notification with an unexpected payload (%d bytes)", len(payload))
            return
        self.on_change(entity, account_id)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
