"""One account's sync of one entity, stage by stage, with no orchestration framework.

    next_batch → extract → validate → transform → fit → deliver (batch + send + ledger) → commit

`AccountRun` holds what lives for the whole run (the Braze client and its event loop, the lock,
the counters); each stage is a method that Prefect tasks in `tasks/` call by run key, and
`AccountRun.run()` chains them directly (benchmarks, dry runs, and the no-Prefect baseline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import polars as pl

from masivo_braze_sync import progress
from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.batch import pack
from masivo_braze_sync.budget import SharedBudget
from masivo_braze_sync.capture import Position, backlog, next_range, prune, read_cursor
from masivo_braze_sync.db.engine import Database, connect
from masivo_braze_sync.deliver import DeliveryStats, deliver
from masivo_braze_sync.entities.base import REJECT_SCHEMA, AccountContext, Entity, Prepared
from masivo_braze_sync.errors import ConfigurationError, SyncError
from masivo_braze_sync.ledger import BatchRef, Ledger, try_lock
from masivo_braze_sync.memory import limit_malloc_arenas
from masivo_braze_sync.settings import Settings, get_settings

log = logging.getLogger(__name__)

# every entry point (CLI, flows, demo, benchmarks) runs accounts through here: cap malloc's
# per-thread arenas before the worker threads allocate (memory.py says why)
limit_malloc_arenas()


class AccountBusy(SyncError):
    """Another run is syncing this entity for this account right now."""


@dataclass
class AccountSummary:
    """What one account's run did. Counts only: safe for Prefect artifacts and logs."""

    account_id: str
    entity: str
    status: str = "ok"  # ok | failed | busy
    rows_read: int = 0
    objects_sent: int = 0
    requests: int = 0
    rejected: int = 0
    skipped: int = 0
    retries: int = 0
    rate_limited: int = 0
    possibly_duplicated: int = 0
    batches: int = 0
    seconds: float = 0.0
    error: str | None = None
    skip_reasons: dict[str, int] = field(default_factory=dict)
    #: entity-specific counts (customers: attributes sent vs a full re-send)
    metrics: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dict (JSON-able)."""
        return asdict(self)


class AccountRun:
    """A run of `entity` for one account. Use as an async context manager."""

    def __init__(
        self,
        db: Database,
        entity: Entity,
        account: AccountConfig,
        settings: Settings | None = None,
        *,
        dry_run: bool = False,
        transport=None,
        printer: Callable[[bytes], None] | None = None,
        budget_factory: Callable[[str, str, int, float], SharedBudget] | None = None,
    ) -> None:
        self.db = db
        self.entity = entity
        self.account = account
        self.settings = settings or get_settings()
        self.dry_run = dry_run
        self.transport = transport
        self.printer = printer or (lambda body: None)
        #: builds the cross-process budget of a (workspace, bucket, limit, window); None = this process only
        self.budget_factory = budget_factory
        self.budgets: dict[str, SharedBudget] = {}
        #: called with the number of requests answered, as they are
        self.on_progress: Callable[[int], None] | None = None
        #: change-log rows waiting when the run started, and consumed since (progress)
        self.progress_total = 0
        self.progress_done = 0
        self.ctx = AccountContext(account.account_id, account.currency, dict(account.toggles))
        self.ledger = Ledger(db, entity.name, account.account_id)
        self.summary = AccountSummary(account.account_id, entity.name)
        self.client = None
        #: the orchestrator's run id, stored with the summary (set by the Prefect flow)
        self.flow_run_id: str | None = None
        self._lock_conn = None
        self._started = 0.0
        self._dry_position: Position | None = None
        self._rejects: list[pl.DataFrame] = []
        self._states: list[pl.DataFrame] = []
        self._skips: list[pl.DataFrame] = []
        #: the keys read for the current batch in change order, with `log_ord` (`fit`)
        self._order: pl.DataFrame | None = None
        self._refused: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AccountRun:
        self._started = time.perf_counter()
        if not self.dry_run:
            # database calls go to a worker thread: the event loop is shared with other accounts
            self._lock_conn = await asyncio.to_thread(connect, self.db.url, autocommit=True)
            if not await asyncio.to_thread(try_lock, self._lock_conn, self.entity.name, self.account.account_id):
                self._lock_conn.close()
                self._lock_conn = None
                self.summary.status = "busy"
                raise AccountBusy(
                    f"account {self.account.account_id}: another {self.entity.name} sync is running; skipped"
                )
            try:
                self.client = await self._open_client()
                await asyncio.to_thread(self._measure_backlog)
            except BaseException as exc:
                # __aexit__ does not run when __aenter__ fails: release the lock and record it here
                await self.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.summary.seconds = round(time.perf_counter() - self._started, 3)
        if exc is not None and self.summary.status == "ok":
            self.summary.status = "failed"
            self.summary.error = describe_error(exc)
        try:
            if self.client is not None:
                await self.client.aclose()
            if not self.dry_run:
                await asyncio.to_thread(self._record_summary)
                if exc is None and self.summary.batches:
                    await asyncio.to_thread(self._prune)
        finally:
            if self._lock_conn is not None:
                await asyncio.to_thread(self._unlock)

    def _unlock(self) -> None:
        # unlock before closing: the server drops a closed session's locks only when its
        # backend exits, after close() returns, so the next run could find the lock held
        try:
            self._lock_conn.execute("SELECT pg_advisory_unlock_all()")
        except Exception:  # the session is closing anyway
            log.debug("advisory unlock failed; closing the session releases it", exc_info=True)
        self._lock_conn.close()

    async def _open_client(self):
        from masivo_braze_sync.braze import BrazeClient, BrazeSettings, limiters

        missing = self.account.missing_settings()
        if missing:
            raise ConfigurationError(
                f"account {self.account.account_id}: Braze integration incomplete, missing {', '.join(missing)}"
            )
        s = self.settings
        track_limit, track_window = self.account.track_limit(s)
        delete_limit, delete_window = self.account.delete_limit(s)
        # a configured limit caps the pacer; without one it follows Braze's announced limit
        track_ceiling, delete_ceiling = self.account.track_ceiling(s), self.account.delete_ceiling(s)
        if self.budget_factory is not None:
            self.budgets = {
                "track": self.budget_factory(self.account.workspace, "track", track_limit, track_window),
                "delete": self.budget_factory(self.account.workspace, "delete", delete_limit, delete_window),
            }
        try:
            return BrazeClient(
                self.account.rest_endpoint,
                self.account.api_key,
                settings=BrazeSettings(
                    timeout_seconds=s.braze_timeout_seconds,
                    max_retries=s.braze_max_retries,
                    backoff_base_seconds=s.braze_backoff_base_seconds,
                    backoff_max_seconds=s.braze_backoff_max_seconds,
                    concurrency=s.braze_concurrency,
                ),
                track_limiter=limiters.get(
                    self.account.workspace, "track", track_limit, track_window, ceiling=track_ceiling
                ),
                delete_limiter=limiters.get(
                    self.account.workspace, "delete", delete_limit, delete_window, ceiling=delete_ceiling
                ),
                transport=self.transport,
                allow_local=s.braze_allow_local_endpoints,
            )
        except ConfigurationError as exc:
            raise type(exc)(f"account {self.account.account_id}: {exc}") from None

    # -- progress ----------------------------------------------------------------------------

    def _measure_backlog(self) -> None:
        with self.db.connection() as conn:
            after = read_cursor(conn, consumer=self.entity.name, account_id=self.account.account_id)
            self.progress_total = backlog(
                conn, entities=self.entity.captured, account_id=self.account.account_id, after=after
            )
        progress.report(self.entity.name, self.account.account_id, 0, self.progress_total)

    def _advance(self, rows: int) -> None:
        self.progress_done += rows
        self.progress_total = max(self.progress_total, self.progress_done)
        progress.report(self.entity.name, self.account.account_id, self.progress_done, self.progress_total)

    # -- stages --------------------------------------------------------------------------------

    def next_batch(self) -> BatchRef | None:
        """The next range of changes to sync (an interrupted batch first), or None when done."""
        if not self.dry_run:
            return self.ledger.next_batch(self.entity.captured, self.settings.batch_rows)
        with self.db.connection() as conn:
            if self._dry_position is None:
                self._dry_position = read_cursor(conn, consumer=self.entity.name, account_id=self.account.account_id)
            rng = next_range(
                conn,
                entities=self.entity.captured,
                account_id=self.account.account_id,
                after=self._dry_position,
                limit=self.settings.batch_rows,
            )
        return None if rng is None else BatchRef(None, self.entity.name, self.account.account_id, rng)

    def extract(self, batch: BatchRef) -> pl.DataFrame:
        """The changed rows behind the batch's log range."""
        frame = self.entity.extract(self.db.url, self.account.account_id, batch.range)
        self.summary.rows_read += frame.height
        self._order = self.entity.read_order(frame)
        return frame

    def validate(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows that may go on; the rest are counted as skipped or kept as rejected."""
        out = self.entity.validate(frame, self.ctx)
        self._note(out)
        return out.frame

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Valid rows as Braze objects (key, array, body)."""
        out = self.entity.transform(frame, self.ctx)
        self._note(out)
        return out.frame

    def fit(self, batch: BatchRef, objects: pl.DataFrame) -> tuple[BatchRef, pl.DataFrame]:
        """End a full batch at its last whole request; the rows after it go to the next batch.

        Every batch but the last would otherwise end with a partly filled request, so a backlog
        would cost one request per batch more than the minimum (objects / 75). Only for new,
        full batches (more rows follow) of entities with `whole_requests`; the rows left out are
        read again by the next batch, and their skips and rejects are counted there, not here.
        """
        order, self._order = self._order, None
        per = self.settings.objects_per_request
        n = objects.height
        if (
            order is None
            or batch.resumed
            or batch.range.rows < self.settings.batch_rows  # the log's end: nothing to wait for
            or n <= per
            or n % per == 0
            or objects.get_column("array").n_unique() != 1
            or objects.get_column("array")[0] == "delete"
        ):
            return batch, objects
        keep = n - n % per
        indexed = order.with_row_index("i")
        cut = indexed.filter(pl.col("key") == objects.get_column("key")[keep])
        kept_last = indexed.filter(pl.col("key").is_in(objects.get_column("key").head(keep).implode()))["i"].max()
        if cut.height != 1 or kept_last is None or kept_last >= cut["i"][0]:
            log.debug("account %s: objects not in read order; batch kept whole", self.account.account_id)
            return batch, objects
        rows = int(cut["log_ord"][0]) - 1  # the log rows before the first row of the first key left out
        fitted = self.ledger.shrink(batch, self.entity.captured, rows)
        later = order.slice(int(cut["i"][0])).get_column("key").implode()

        def now(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(~pl.col("key").is_in(later))

        s = self.summary
        s.rows_read -= order.height - int(cut["i"][0])
        for frame in self._rejects:
            s.rejected -= frame.filter(pl.col("key").is_in(later) & (pl.col("stage") != "field")).height
        for frame in self._skips:
            for reason, count in frame.filter(pl.col("key").is_in(later)).group_by("reason").len().iter_rows():
                s.skipped -= count
                s.skip_reasons[reason] -= count
        s.skip_reasons = {r: c for r, c in s.skip_reasons.items() if c}
        self._rejects = [now(f) for f in self._rejects]
        self._states = [now(f) for f in self._states]
        self._skips = []
        return fitted, objects.head(keep)

    async def deliver(self, batch: BatchRef, objects: pl.DataFrame) -> DeliveryStats:
        """Pack the objects into requests and send those not already delivered for this batch."""
        unknown: set[str] = set()
        if batch.resumed and batch.id is not None:
            state = await asyncio.to_thread(self.ledger.take_over, batch.id)
            if state.done_keys and not self.entity.idempotent:
                objects = objects.filter(~pl.col("key").is_in(list(state.done_keys)))
            unknown = state.unknown_keys
        s = self.settings
        plans = pack(
            objects,
            max_objects=s.objects_per_request,
            combined=self.account.combined_object_limit,
            max_delete_ids=s.delete_ids_per_request,
        )
        if self.dry_run:
            for plan in plans:
                self.printer(plan.body)
            stats = DeliveryStats(requests=len(plans), objects_sent=sum(p.object_count for p in plans))
            self._add(stats)
            return stats
        dup = [bool(unknown) and not self.entity.idempotent and not unknown.isdisjoint(p.keys) for p in plans]
        ids = await asyncio.to_thread(self.ledger.add_requests, batch.id, plans, dup)
        stats = DeliveryStats(possibly_duplicated=sum(dup))
        try:
            await deliver(
                self.client,
                self.ledger,
                batch.id,
                plans,
                ids,
                concurrency=s.braze_concurrency,
                budgets=self.budgets,
                on_progress=self.on_progress,
                stats=stats,
            )
        finally:
            # a delivery that gives up half-way still sent requests, some possibly twice: count them
            self._add(stats)
        self._refused |= stats.rejected_keys
        return stats

    def commit(self, batch: BatchRef) -> None:
        """Record the batch's rejected rows and delivered state; move the cursor past it."""
        rejected = pl.concat(self._rejects) if self._rejects else pl.DataFrame(schema=REJECT_SCHEMA)
        state = pl.concat(self._states) if self._states else None
        if state is not None and self._refused:
            state = state.filter(~pl.col("key").is_in(list(self._refused)))  # Braze did not take them
        self._rejects, self._states, self._refused, self._skips = [], [], set(), []
        self.summary.batches += 1
        self._advance(batch.range.rows)
        if self.dry_run:
            self._dry_position = batch.range.upto
            return
        on_commit = None
        if state is not None and state.height:

            def on_commit(conn, state=state) -> None:
                self.entity.commit_state(conn, self.ctx, state)

        self.ledger.commit(batch, rejected, on_commit)

    async def run(self) -> AccountSummary:
        """Every stage for every batch until the backlog is empty (no orchestration)."""
        while (batch := self.next_batch()) is not None:
            objects = self.transform(self.validate(self.extract(batch)))
            batch, objects = self.fit(batch, objects)
            await self.deliver(batch, objects)
            self.commit(batch)
        return self.summary

    # -- bookkeeping -------------------------------------------------------------------------

    def _note(self, out: Prepared) -> None:
        if out.rejected.height:
            self._rejects.append(out.rejected)
            self.summary.rejected += out.rejected.filter(pl.col("stage") != "field").height
        if out.state is not None:
            self._states.append(out.state)
        if out.skipped_keys is not None and out.skipped_keys.height:
            self._skips.append(out.skipped_keys)
        for reason, n in out.skipped.items():
            self.summary.skipped += n
            self.summary.skip_reasons[reason] = self.summary.skip_reasons.get(reason, 0) + n
        for name, n in out.metrics.items():
            self.summary.metrics[name] = self.summary.metrics.get(name, 0) + n

    def _add(self, stats: DeliveryStats) -> None:
        s = self.summary
        s.requests += stats.requests
        s.objects_sent += stats.objects_sent
        s.rejected += stats.rejected
        s.retries += stats.retries
        s.rate_limited += stats.rate_limited
        s.possibly_duplicated += stats.possibly_duplicated

    def _prune(self) -> None:
        from masivo_braze_sync.entities import ENTITIES  # every consumer's reads decide what may go

        try:
            with self.db.connection() as conn:
                prune(
                    conn,
                    account_id=self.account.account_id,
                    readers={name: spec.captured for name, spec in ENTITIES.items()},
                )
        except Exception:
            log.warning("account %s: could not prune the change log", self.account.account_id, exc_info=True)

    def _record_summary(self) -> None:
        s = self.summary
        try:
            with self.db.connection() as conn:
                conn.execute(
                    """
                    INSERT INTO braze_sync.run_summaries (flow_run_id, consumer, account_id, status, rows_read,
                      objects_sent, requests, rejected, skipped, retries, rate_limited, possibly_duplicated,
                      seconds, error, started_at, finished_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                            now() - make_interval(secs => %s), now())
                    """,
                    (
                        self.flow_run_id,
                        s.entity,
                        s.account_id,
                        s.status,
                        s.rows_read,
                        s.objects_sent,
                        s.requests,
                        s.rejected,
                        s.skipped,
                        s.retries,
                        s.rate_limited,
                        s.possibly_duplicated,
                        s.seconds,
                        s.error,
                        s.seconds,
                    ),
                )
        except Exception:
            log.warning("account %s: could not record the run summary", s.account_id, exc_info=True)


def describe_error(exc: BaseException) -> str:
    """An operator-facing one-liner for an account's failure: our messages, or the class name.

    Messages of foreign exceptions (a driver's, an HTTP library's) may quote data, so only their
    type is shown; ours are written to carry ids and counts only.
    """
    if isinstance(exc, SyncError):
        return str(exc)
    return f"{type(exc).__name__} (see the run's logs)"
