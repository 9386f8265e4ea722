"""One account in a live session: its pending consumers, its open runs, its rounds.

A round looks at the account's due customers first, then at its other due consumers side by side,
so a new customer's profile goes before its first event and a deleted customer's delete before
anything else for it (docs/live.md#order). Each consumer's run stays open (lock held, Braze client
open) between rounds; its micro-batches go through the same `AccountRun` as a batch sync.
A failure closes the account's runs and keeps the account out for a growing while; the other
accounts, each in its own worker, are not held up (docs/live.md#faults).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import psycopg

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.capture import backlog, read_cursor
from masivo_braze_sync.entities import CUSTOMERS, Entity
from masivo_braze_sync.errors import DatabaseUnavailable
from masivo_braze_sync.live.backoff import Backoff
from masivo_braze_sync.live.pending import Pending
from masivo_braze_sync.pipeline import AccountBusy, AccountRun, describe_error

if TYPE_CHECKING:
    from masivo_braze_sync.live.session import LiveSession

log = logging.getLogger(__name__)

#: how long to leave a consumer whose lock another run holds (that run delivers the changes)
BUSY_RETRY_SECONDS = 2.0
#: ...doubled while it stays busy, so a standby live process does not reconnect to every pair
BUSY_RETRY_MAX_SECONDS = 60.0


class AccountWorker:
    """Runs the rounds of one account until stopped."""

    def __init__(self, session: LiveSession, account: AccountConfig, consumers: list[Entity]) -> None:
        s = session.settings
        self.session = session
        self.account = account
        self.consumers = consumers
        self.pending = Pending(s.live_retry_min_seconds, s.live_retry_max_seconds)
        self.runs: dict[str, AccountRun] = {}
        #: when each open run last worked: an idle one is closed (its lock session goes back)
        self.used: dict[str, float] = {}
        self.busy: dict[str, Backoff] = {}
        self.wakeup = asyncio.Event()
        self.stop = asyncio.Event()
        self.failures = Backoff(1.0, s.live_failure_backoff_max_seconds)
        self.blocked_until = 0.0
        self.db_failure = False
        self._update: tuple[AccountConfig, list[Entity]] | None = None
        self._flushed = time.monotonic()

    @property
    def account_id(self) -> str:
        """The account's id."""
        return self.account.account_id

    # -- from the session ------------------------------------------------------------------------

    def wake(self, consumer: str, delay: float) -> None:
        """A change of `consumer` committed (or a sweep): look within `delay` seconds."""
        if any(c.name == consumer for c in self.consumers):
            self.pending.wake(consumer, delay)
            self.wakeup.set()

    def wake_all(self, delay: float = 0.0) -> None:
        """Look at every consumer (a sweep)."""
        for c in self.consumers:
            self.pending.wake(c.name, delay)
        self.wakeup.set()

    def database_back(self) -> None:
        """The database answers again: an account that failed only because of it may go at once."""
        if self.db_failure:
            self.blocked_until = 0.0
            self.wakeup.set()

    def update(self, account: AccountConfig, consumers: list[Entity]) -> None:
        """New integration settings: applied between rounds (the runs are reopened with them)."""
        self._update = (account, consumers)
        self.wakeup.set()

    # -- the loop --------------------------------------------------------------------------------

    async def run(self, session_stop: asyncio.Event) -> None:
        """Rounds until the session or this worker is stopped; then close the runs."""
        try:
            while not (session_stop.is_set() or self.stop.is_set()):
                await self._wait()
                if session_stop.is_set() or self.stop.is_set():
                    break
                if self._update is not None:
                    await self._close_all()
                    (self.account, self.consumers), self._update = self._update, None
                await self._close_idle()
                if time.monotonic() < self.blocked_until:
                    continue
                due = self.pending.due()
                if due:
                    async with self.session.slots:
                        await self._round(due, session_stop)
                    await self._maybe_flush()
        finally:
            await self._close_all()

    async def _wait(self) -> None:
        wait_until = self.pending.next_due()
        if self.blocked_until and wait_until is not None:
            wait_until = max(wait_until, self.blocked_until)
        if self.used:  # wake up to close the runs that fell idle
            idle_at = min(self.used.values()) + self.session.settings.live_idle_close_seconds
            wait_until = idle_at if wait_until is None else min(wait_until, idle_at)
        timeout = None if wait_until is None else max(0.0, wait_until - time.monotonic())
        waits = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(self.stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self.wakeup.clear()

    def _ordered(self, due: set[str]) -> list[Entity]:
        names = set(due)
        # a consumer bound by the customers' caught-up horizon can only move if that horizon moves:
        # the customers consumer looks too (one read when nothing changed; it records the horizon)
        if any(c.after_customers for c in self.consumers if c.name in names) and any(
            c is CUSTOMERS for c in self.consumers
        ):
            names.add(CUSTOMERS.name)
        return [c for c in self.session.order if c.name in names and c in self.consumers]

    async def _round(self, due: set[str], stop: asyncio.Event) -> None:
        ordered = self._ordered(due)
        # customers first (a profile before anything else for it); the others after them side by
        # side: they do not depend on each other, and waiting for each other's micro-batch only
        # added latency (docs/live.md#order)
        first = [e for e in ordered if e is CUSTOMERS]
        rest = [e for e in ordered if e is not CUSTOMERS]
        ok = all([await self._look(e, stop) for e in first])
        if ok and rest:
            ok = all(await asyncio.gather(*(self._look(e, stop) for e in rest)))
        if not ok:  # the lock and client of the others are reopened with the account
            await self._close_all()
            return
        if not (stop.is_set() or self.stop.is_set()):
            self.failures.reset()
            self.db_failure = False

    async def _look(self, entity: Entity, stop: asyncio.Event) -> bool:
        """One consumer's turn in a round; False when it failed (the account is kept out a while)."""
        if stop.is_set() or self.stop.is_set():
            return True  # still pending: the next session takes it up
        self.pending.looking(entity.name)
        try:
            run = await self._open(entity)
            batches = await self.session.drive(run, stop)
            if stop.is_set():
                return True
            waiting = await asyncio.to_thread(self._waiting, entity)
        except AccountBusy:
            busy = self.busy.setdefault(entity.name, Backoff(BUSY_RETRY_SECONDS, BUSY_RETRY_MAX_SECONDS))
            self.pending.later(entity.name, busy.grow())
            return True
        except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
            await self._failed(entity, exc)
            return False
        self.busy.pop(entity.name, None)
        self.used[entity.name] = time.monotonic()
        if not waiting:
            self.pending.done(entity.name)
        elif batches:  # the account's other consumers had their turn too: back in the next round
            self.pending.again(entity.name)
        else:
            self.pending.held(entity.name)
        return True

    async def _open(self, entity: Entity) -> AccountRun:
        run = self.runs.get(entity.name)
        if run is None:
            account = await self.session.prepare_account(self.account)
            run = self.session.new_run(entity, account)
            await run.__aenter__()  # raises AccountBusy when a scheduled run holds the lock
            self.runs[entity.name] = run
        return run

    def _waiting(self, entity: Entity) -> bool:
        """Whether committed changes still wait after the cursor (held back by the horizon)."""
        with self.session.db.connection() as conn:
            after = read_cursor(conn, consumer=entity.name, account_id=self.account_id)
            return backlog(conn, entities=entity.captured, account_id=self.account_id, after=after) > 0

    async def _failed(self, entity: Entity, exc: BaseException) -> None:
        delay = self.failures.grow()
        self.db_failure = isinstance(exc, psycopg.Error | DatabaseUnavailable)
        self.blocked_until = time.monotonic() + delay
        log.warning(
            "live: account %s failed in %s (%s); trying again in %.0fs",
            self.account_id,
            entity.name,
            describe_error(exc),
            delay,
        )
        self.session.note_failure(self.account_id, entity.name, describe_error(exc))
        run = self.runs.pop(entity.name, None)
        if run is not None:
            await self._close(run, exc)
        self.pending.later(entity.name, delay)

    # -- runs ------------------------------------------------------------------------------------

    async def _maybe_flush(self) -> None:
        if time.monotonic() - self._flushed < self.session.settings.live_summary_seconds:
            return
        self._flushed = time.monotonic()
        for run in self.runs.values():
            await self.session.flush_summary(run)

    async def _close_idle(self) -> None:
        """Close the runs idle for `live_idle_close_seconds`: each holds a Postgres session for its
        lock, and one session per (entity, account) would exhaust the server's connections."""
        limit = time.monotonic() - self.session.settings.live_idle_close_seconds
        for name in [n for n, t in self.used.items() if t <= limit]:
            self.used.pop(name, None)
            run = self.runs.get(name)
            if run is not None:
                await self._close(run)  # records its summary and releases the lock ...
                self.runs.pop(name, None)  # ... before the run stops showing as open

    async def _close(self, run: AccountRun, exc: BaseException | None = None) -> None:
        try:
            await run.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)
        except Exception:
            log.debug("live: closing a run of account %s failed", self.account_id, exc_info=True)

    async def _close_all(self) -> None:
        runs, self.runs = list(self.runs.values()), {}
        self.used.clear()
        for run in runs:
            await self._close(run)
