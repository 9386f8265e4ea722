"""A live session: the listener, one worker per account, the sweep, and a clean stop.

    LISTEN → sweep → (notification → collect window → the account's round) ... → stop

`LiveSession.run(stop)` returns once `stop` is set and every batch in flight has been committed
(or, if it could not be, left open for the next run to resume: never half-committed). It never
cancels a micro-batch; the caller decides what a second interrupt means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from masivo_braze_sync.accounts import AccountConfig, load_accounts
from masivo_braze_sync.budget import BlockBudget, SharedBudget
from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities import ENTITIES, Entity
from masivo_braze_sync.live.listener import Listener
from masivo_braze_sync.live.worker import AccountWorker
from masivo_braze_sync.pipeline import AccountRun
from masivo_braze_sync.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: a change of this source table is a change of the accounts' settings, not of data
SETTINGS_TABLE = "braze_integrations"


@dataclass(frozen=True)
class BatchLine:
    """One delivered micro-batch (counts and ids only): what the CLI prints."""

    account_id: str
    consumer: str
    rows: int
    objects_sent: int
    requests: int
    seconds: float


@dataclass
class PairTotals:
    """What a session did for one (consumer, account) so far: the summary artifact's row."""

    account_id: str
    consumer: str
    status: str = "ok"
    batches: int = 0
    rows_read: int = 0
    objects_sent: int = 0
    requests: int = 0
    failures: int = 0
    error: str | None = None
    last_batch_at: float | None = field(default=None, repr=False)


class LiveSession:
    """Keeps the selected entities of the selected accounts (default all) in sync as they change."""

    def __init__(
        self,
        db: Database,
        *,
        entities: list[str] | None = None,
        account_ids: list[str] | None = None,
        settings: Settings | None = None,
        transport=None,
        budget_factory: Callable[[str, str, int, float], SharedBudget] | None = None,
        prepare_account: Callable[[AccountConfig], Awaitable[AccountConfig]] | None = None,
        on_batch: Callable[[BatchLine], None] | None = None,
        flow_run_id: str | None = None,
    ) -> None:
        unknown = sorted(set(entities or ()) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities: {', '.join(unknown)}")
        #: micro-batches open several short transactions: `Database` pools its sessions
        #: (docs/architecture.md#postgres-sessions), which live latency depends on
        self.db = db
        self.settings = settings or get_settings()
        #: consumers in round order (customers first: docs/live.md#order)
        self.order: list[Entity] = [e for name, e in ENTITIES.items() if not entities or name in entities]
        self.account_ids = account_ids or None
        self.transport = transport
        self.budget_factory = budget_factory
        self._prepare = prepare_account
        self.on_batch = on_batch
        self.flow_run_id = flow_run_id
        self.slots = asyncio.Semaphore(self.settings.account_concurrency)
        self.workers: dict[str, AccountWorker] = {}
        self.totals: dict[tuple[str, str], PairTotals] = {}
        self.sweeps = 0
        self.listener = Listener(db.url, self._on_change, self._on_listening)
        self._tasks: dict[str, asyncio.Task] = {}
        self._reload = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self.listening = asyncio.Event()

    # -- running ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; return once every worker has closed its runs."""
        self._stop = stop
        listener = asyncio.create_task(self.listener.run(stop), name="live-listener")
        sweeper = asyncio.create_task(self._sweep_timer(stop), name="live-sweep")
        try:
            await stop.wait()
        finally:
            stop.set()
            for worker in self.workers.values():
                worker.stop.set()  # each finishes the micro-batch in flight, then closes its runs
            await asyncio.gather(listener, sweeper, return_exceptions=True)
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()

    async def _sweep_timer(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waits = [asyncio.ensure_future(self._reload.wait()), asyncio.ensure_future(stop.wait())]
            done, _ = await asyncio.wait(
                waits, timeout=self.settings.live_sweep_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waits:
                w.cancel()
            if stop.is_set():
                return
            try:
                if done:  # the integrations changed: reload them (no sweep needed)
                    self._reload.clear()
                    await self._sync_accounts(stop)
                else:
                    await self.sweep()
            except Exception:
                log.warning("live: could not load the accounts; trying again at the next sweep", exc_info=True)

    async def sweep(self) -> None:
        """Look at every (consumer, account) once, notified or not (reloading the accounts first)."""
        assert self._stop is not None
        await self._sync_accounts(self._stop)
        self.sweeps += 1
        for worker in self.workers.values():
            worker.wake_all()

    def _on_listening(self) -> None:
        # LISTEN is in place: whatever was committed before is found by the sweep
        self.listening.set()
        for worker in self.workers.values():
            worker.database_back()
        asyncio.get_running_loop().create_task(self._safe_sweep())

    async def _safe_sweep(self) -> None:
        try:
            await self.sweep()
        except Exception:
            log.warning("live: sweep failed; the next one is in %ss", self.settings.live_sweep_seconds, exc_info=True)

    def _on_change(self, table: str, account_id: str) -> None:
        if table == SETTINGS_TABLE:
            self._reload.set()
        worker = self.workers.get(account_id)
        if worker is None:
            return  # an account not (yet) followed: the reload or the next sweep adds it
        collect = self.settings.live_collect_ms / 1000
        for entity in self.order:
            if table in entity.captured:
                worker.wake(entity.name, collect)

    async def _sync_accounts(self, stop: asyncio.Event) -> None:
        accounts = await asyncio.to_thread(self._load)
        seen = set()
        for account in accounts:
            consumers = [e for e in self.order if e.is_enabled(account)]
            if not consumers:
                continue
            seen.add(account.account_id)
            worker = self.workers.get(account.account_id)
            if worker is None:
                worker = self.workers[account.account_id] = AccountWorker(self, account, consumers)
                self._tasks[account.account_id] = asyncio.create_task(
                    worker.run(stop), name=f"live-{account.account_id}"
                )
                worker.wake_all()
            elif worker.account != account or worker.consumers != consumers:
                worker.update(account, consumers)
        for account_id in set(self.workers) - seen:  # integration gone or switched off
            self.workers.pop(account_id).stop.set()

    def _load(self) -> list[AccountConfig]:
        with self.db.connection() as conn:
            return load_accounts(conn, self.account_ids)

    # -- what workers call -----------------------------------------------------------------------

    async def prepare_account(self, account: AccountConfig) -> AccountConfig:
        """The account as the run needs it (a secret key resolved by the shell, for example)."""
        return account if self._prepare is None else await self._prepare(account)

    def new_run(self, entity: Entity, account: AccountConfig) -> AccountRun:
        """An `AccountRun` for the session (not entered yet)."""
        factory = None
        if self.budget_factory is not None:
            inner_factory = self.budget_factory

            def factory(workspace: str, bucket: str, limit: int, window: float) -> SharedBudget:
                # a micro-batch is often one request: take shared slots a block at a time
                return BlockBudget(inner_factory(workspace, bucket, limit, window), hold_seconds=window)

        run = AccountRun(self.db, entity, account, self.settings, transport=self.transport, budget_factory=factory)
        run.flow_run_id = self.flow_run_id
        return run

    async def drive(self, run: AccountRun, stop: asyncio.Event) -> int:
        """Micro-batches of one run while its reads come back full (a backlog: back to back, as a
        batch run), until one that was not, or nothing is readable (or `stop`: never mid-batch).

        Returns the batches done. Stopping at a read that was not full gives the account's other
        consumers their turn: under a steady trickle every read finds a few rows, and a loop
        "until nothing is readable" would keep, say, events waiting for customers to stop changing.
        """
        batches = 0
        while not stop.is_set():
            result = await run.step()
            if result is None:
                break
            batches += 1
            self._emit(run, result.rows_read, result.objects_sent, result.requests, result.seconds)
            if result.range.rows < self.settings.batch_rows:  # caught up (or ended at a whole request)
                break
        return batches

    def _emit(self, run: AccountRun, rows: int, objects: int, requests: int, seconds: float) -> None:
        t = self._totals(run.account.account_id, run.entity.name)
        t.batches += 1
        t.rows_read += rows
        t.objects_sent += objects
        t.requests += requests
        t.status, t.error, t.last_batch_at = "ok", None, time.time()
        if self.on_batch is not None:
            self.on_batch(
                BatchLine(run.account.account_id, run.entity.name, rows, objects, requests, round(seconds, 3))
            )

    def note_failure(self, account_id: str, consumer: str, error: str) -> None:
        """Count a failed attempt (the worker retries it later)."""
        t = self._totals(account_id, consumer)
        t.status, t.error = "failed", error
        t.failures += 1

    async def flush_summary(self, run: AccountRun) -> None:
        """Write the run's summary so far to run_summaries and start a new one (periodic)."""
        if run.summary.batches:
            await asyncio.to_thread(run.record_summary)
            run.reset_summary()

    def _totals(self, account_id: str, consumer: str) -> PairTotals:
        return self.totals.setdefault((account_id, consumer), PairTotals(account_id, consumer))

    def summary_rows(self) -> list[dict]:
        """Per (account, consumer) totals of the session so far: counts and ids only."""
        return [{k: v for k, v in vars(t).items() if k != "last_batch_at"} for _, t in sorted(self.totals.items())]
