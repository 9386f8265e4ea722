"""One account's sync of one entity: the stage loop, owned here, with no orchestration framework.

    next_batch → extract → validate → transform → fit → deliver (batch + send + ledger) → commit

`AccountRun` holds what lives for the whole run (the Braze client and its event loop, the lock,
the counters). `step()` drives one batch through every stage, reading the next range ahead while
the batch is delivered when the entity declares `read_ahead`; `run()` steps until caught up.
Batch flows, the audience resync and live mode all drive `step()`: the caller decides how a stage
is executed (`stage_runner`: inline by default; the flows run each whole step as one Prefect task,
`tasks/stages.py`) and the `source` where batches come from (the change log by default, `source.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import polars as pl

from masivo_braze_sync import partitions, progress
from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.batch import pack
from masivo_braze_sync.budget import SharedBudget
from masivo_braze_sync.capture import (
    LogRange,
    Position,
    SwitchedOff,
    backlog,
    prune,
    read_cursor,
    skip_switched_off,
    try_lock,
)
from masivo_braze_sync.db.engine import Database, connect
from masivo_braze_sync.deliver import DeliveryStats, deliver
from masivo_braze_sync.entities import CUSTOMERS, ledger_bounds
from masivo_braze_sync.entities.base import REJECT_SCHEMA, AccountContext, Entity, Prepared
from masivo_braze_sync.errors import ConfigurationError, SyncError
from masivo_braze_sync.ledger import BatchRef, Ledger
from masivo_braze_sync.partitions import Partition
from masivo_braze_sync.settings import Settings, get_settings
from masivo_braze_sync.source import BatchSource, ChangeLog
from masivo_braze_sync.summary import AccountSummary, record_summary

log = logging.getLogger(__name__)

T = TypeVar("T")
#: runs one stage: `await runner(stage_name, call)` must await `call()` and return its result
StageRunner = Callable[[str, Callable[[], Awaitable[T]]], Awaitable[T]]
#: the stage names a runner sees, in loop order
STAGES = ("next-batch", "extract", "validate", "transform", "deliver", "commit", "read-ahead")


async def run_inline(name: str, call: Callable[[], Awaitable[T]]) -> T:
    """The default stage runner: just run the stage."""
    return await call()


#: one read-ahead thread for the whole process: read-aheads are long and CPU-bound, and more than
#: one at a time would take the GIL from the event loop that sends every account's requests
_READ_AHEAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")


class RunFailed(SyncError):
    """An account's run (a sync or a resync) failed; carries its summary (counts only)."""

    def __init__(self, summary: AccountSummary) -> None:
        super().__init__(f"account {summary.account_id}: {summary.error}")
        self.summary = summary


@dataclass(frozen=True)
class BatchResult:
    """What one `step()` did: the batch and its counts (ids and counts only)."""

    batch_id: int | None
    range: LogRange
    rows_read: int
    objects_sent: int
    requests: int
    seconds: float


@dataclass
class _Ahead:
    """The next range of the log, read and mapped before it is taken as a batch."""

    range: LogRange
    rows: int
    validated: Prepared
    transformed: Prepared
    #: the keys read in change order (`fit`), when the entity ends batches at whole requests
    order: pl.DataFrame | None


class AccountBusy(SyncError):
    """Another run is syncing this entity for this account right now."""


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
        stage_runner: StageRunner | None = None,
        source: BatchSource | None = None,
        partition: int | None = None,
        upto: Position | None = None,
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
        #: how each stage is executed (inline, or as an orchestrator's task)
        self.stage_runner: StageRunner = stage_runner or run_inline
        #: where batches come from (the change log unless told otherwise)
        self.source: BatchSource = source or ChangeLog()
        #: called with the number of requests answered, as they are
        self.on_progress: Callable[[int], None] | None = None
        #: change-log rows waiting when the run started, and consumed since (progress)
        self.progress_total = 0
        self.progress_done = 0
        self.ctx = AccountContext(
            account.account_id, account.currency, dict(account.toggles), orders_as=account.orders_as or "purchases"
        )
        #: the partition asked for (None: the entity has one, the whole log); resolved on entering
        self.partition_index = partition
        #: the partition this run syncs (docs/change-capture.md#partitions)
        self.partition = Partition(entity.name)
        #: the last log position this run may reach (a partition change's barrier); None: no limit
        self.upto = upto
        self.ledger = self._ledger(self.partition, None)
        self.summary = AccountSummary(account.account_id, entity.name)
        self.client = None
        #: the orchestrator's run id, stored with the summary (set by the Prefect flow)
        self.flow_run_id: str | None = None
        self._lock_conn = None
        self._started = 0.0
        self._ahead: _Ahead | None = None
        self._rejects: list[pl.DataFrame] = []
        self._states: list[pl.DataFrame] = []
        self._skips: list[pl.DataFrame] = []
        #: the keys read for the current batch in change order, with `log_ord` (`fit`)
        self._order: pl.DataFrame | None = None
        self._refused: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> AccountRun:
        self._started = time.perf_counter()
        if self.dry_run:
            try:
                self.entity.check(self.account)
                await asyncio.to_thread(self._resolve_partition)
            except ConfigurationError as exc:
                self.summary.status, self.summary.error = "failed", str(exc)
                raise
        else:
            try:
                await asyncio.to_thread(self._resolve_partition)
            except ConfigurationError as exc:  # no such partition: recorded, so `status` shows why
                self.summary.status, self.summary.error = "failed", str(exc)
                self.summary.seconds = round(time.perf_counter() - self._started, 3)
                await asyncio.to_thread(self.record_summary)
                raise
            consumer = self.partition.consumer
            # database calls go to a worker thread: the event loop is shared with other accounts
            self._lock_conn = await asyncio.to_thread(connect, self.db.url, autocommit=True)
            try:
                busy = not await asyncio.to_thread(try_lock, self._lock_conn, consumer, self.account.account_id)
                if busy:
                    why = f"another {consumer} sync is running"
                elif await asyncio.to_thread(self._partitions_changed):
                    # the count changed between reading it and taking the lock: this consumer's
                    # cursor may no longer be its own (`partitions.change_count`)
                    busy, why = True, f"the partitions of {self.entity.name} changed meanwhile"
            except BaseException:
                await asyncio.to_thread(self._unlock)
                self._lock_conn = None
                raise
            if busy:
                await asyncio.to_thread(self._unlock)
                self._lock_conn = None
                self.summary.status = "busy"
                raise AccountBusy(f"account {self.account.account_id}: {why}; skipped")
            try:
                self.entity.check(self.account)  # a wrong setting fails this account's run, named in it
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
                await asyncio.to_thread(self.record_summary)
                if exc is None and self.summary.batches:
                    await asyncio.to_thread(self._prune)
        finally:
            if self._lock_conn is not None:
                await asyncio.to_thread(self._unlock)

    def _ledger(self, part: Partition, customers: list[Partition] | None) -> Ledger:
        return Ledger(
            self.db,
            part.consumer,
            self.account.account_id,
            part=part.slice,
            sender=self.entity.name,
            cap=self.upto,
            **ledger_bounds(self.entity, self.account, customers),
        )

    def _resolve_partition(self) -> None:
        """Read the entity's partition count for the account: the partition to sync, its ledger."""
        with self.db.connection() as conn:
            count = partitions.count(conn, self.entity.name, self.account.account_id)
            customers = partitions.partitions_of(conn, CUSTOMERS.name, self.account.account_id)
        if self.partition_index is None and count > 1:
            raise ConfigurationError(
                f"account {self.account.account_id}: {self.entity.name} has {count} partitions; "
                f"sync each one (--partition 0 to {count - 1})"
            )
        self.partition = Partition(self.entity.name, self.partition_index or 0, count)
        self.ledger = self._ledger(self.partition, customers)

    def _partitions_changed(self) -> bool:
        with self.db.connection() as conn:
            return partitions.count(conn, self.entity.name, self.account.account_id) != self.partition.count

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
            account_id, ledger = self.account.account_id, self.ledger
            after = read_cursor(conn, consumer=ledger.consumer, account_id=account_id)
            self.progress_total = backlog(
                conn, entities=self.entity.captured, account_id=account_id, after=after, part=ledger.part
            )
        progress.report(self.entity.name, self.account.account_id, 0, self.progress_total)

    def _advance(self, rows: int) -> None:
        self.progress_done += rows
        self.progress_total = max(self.progress_total, self.progress_done)
        progress.report(self.entity.name, self.account.account_id, self.progress_done, self.progress_total)

    # -- stages --------------------------------------------------------------------------------

    def next_batch(self) -> BatchRef | None:
        """The next batch to sync (an interrupted one first), or None when caught up."""
        return self.source.next_batch(self)

    def extract(self, batch: BatchRef) -> pl.DataFrame:
        """The rows behind the batch."""
        frame = self.source.extract(self, batch)
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
            left = frame.filter(pl.col("key").is_in(later))
            notes = left.filter(pl.col("stage") == "field").height
            s.rejected -= left.height - notes
            if notes:
                s.metrics["field_notes"] -= notes
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
            self.summary.add(stats)
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
            self.summary.add(stats)
        self._refused |= stats.rejected_keys
        return stats

    def commit(self, batch: BatchRef) -> None:
        """Record the batch's rejected rows and delivered state; move the cursor past it."""
        if not self.source.complete(batch):
            return  # more of the batch is still to be read (the resync's pages)
        rejected = pl.concat(self._rejects) if self._rejects else pl.DataFrame(schema=REJECT_SCHEMA)
        state = pl.concat(self._states) if self._states else None
        if state is not None and self._refused:
            state = state.filter(~pl.col("key").is_in(list(self._refused)))  # Braze did not take them
        self._rejects, self._states, self._refused, self._skips = [], [], set(), []
        self.summary.batches += 1
        self._advance(batch.range.rows)
        on_commit = None
        if state is not None and state.height:

            def on_commit(conn, state=state) -> None:
                self.entity.commit_state(conn, self.ctx, state)

        self.source.commit(self, batch, rejected, on_commit)

    # -- the loop -----------------------------------------------------------------------------

    async def step(self) -> BatchResult | None:
        """Take the next batch and drive it through every stage; None when nothing is readable.

        While the batch is delivered, the range after it is read and mapped (entities that declare
        `read_ahead`), so the workspace does not sit idle between batches. May be called again
        after it returned None: new changes are then taken as they become readable.
        """
        started = time.perf_counter()
        s = self.summary
        rows, sent, requests = s.rows_read, s.objects_sent, s.requests
        batch = await self._stage("next-batch", self.next_batch)
        if batch is None:
            return None
        objects = self._take_ahead(batch)
        if objects is None:
            frame = await self._stage("extract", self.extract, batch)
            valid = await self._stage("validate", self.validate, frame)
            objects = await self._stage("transform", self.transform, valid)
        # a few milliseconds of bookkeeping, not a stage: the batch ends at a whole request
        batch, objects = await asyncio.to_thread(self.fit, batch, objects)
        ahead = self._read_ahead_task(batch)
        try:
            await self._stage("deliver", self.deliver, batch, objects)
            await self._stage("commit", self.commit, batch)
        finally:
            if ahead is not None:
                await asyncio.wait([ahead])
                if not ahead.cancelled() and ahead.exception() is not None:
                    # it only reads: the next batch is then read as usual, and fails there if it must
                    log.warning(
                        "account %s: reading ahead failed; reading the next batch as usual", self.account.account_id
                    )
        return BatchResult(
            batch.id,
            batch.range,
            s.rows_read - rows,
            s.objects_sent - sent,
            s.requests - requests,
            round(time.perf_counter() - started, 3),
        )

    async def run(self) -> AccountSummary:
        """Step until nothing is left to read."""
        while await self.step() is not None:
            pass
        return self.summary

    async def _stage(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a stage through the stage runner; blocking stages go to a worker thread, so one
        account's database work or mapping never stalls another account's requests on this loop."""
        if asyncio.iscoroutinefunction(fn):
            return await self.stage_runner(name, lambda: fn(*args))
        return await self.stage_runner(name, lambda: asyncio.to_thread(fn, *args))

    def _read_ahead_task(self, batch: BatchRef) -> asyncio.Task | None:
        if self.dry_run or not self.entity.read_ahead:
            return None
        loop = asyncio.get_running_loop()
        return asyncio.create_task(
            self.stage_runner("read-ahead", lambda: loop.run_in_executor(_READ_AHEAD, self._read_ahead, batch))
        )

    def _read_ahead(self, batch: BatchRef) -> int:
        """Extract, validate and transform the range after `batch`; returns its rows (0: none).

        Reading ahead takes no batch, writes nothing and counts nothing: `_take_ahead` uses the
        result only if the next batch is exactly that range. Only for entities whose rows do not
        depend on what the sync itself commits (`Entity.read_ahead`).
        """
        self._ahead = None
        rng = self.source.peek(self, batch)
        if rng is None:
            return 0
        frame = self.entity.extract(self.db.url, self.account.account_id, rng)
        validated = self.entity.validate(frame, self.ctx)
        transformed = self.entity.transform(validated.frame, self.ctx)
        # only the objects wait for the batch: the rows they came from are let go now
        self._ahead = _Ahead(
            rng,
            frame.height,
            replace(validated, frame=validated.frame.clear()),
            transformed,
            self.entity.read_order(frame),
        )
        return frame.height

    def _take_ahead(self, batch: BatchRef) -> pl.DataFrame | None:
        """The objects read ahead for `batch`, with the effects of extract, validate and transform
        (rows read, rejects, skips, state); None when `batch` is not the range read ahead (the
        cursor moved elsewhere, or later rows joined a short range)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or batch.resumed or batch.range != ahead.range:
            return None
        self.summary.rows_read += ahead.rows
        self._order = ahead.order
        self._note(ahead.validated)
        self._note(ahead.transformed)
        return ahead.transformed.frame

    # -- bookkeeping -------------------------------------------------------------------------

    def _note(self, out: Prepared) -> None:
        if out.rejected.height:
            self._rejects.append(out.rejected)
            notes = out.rejected.filter(pl.col("stage") == "field").height
            self.summary.rejected += out.rejected.height - notes
            if notes:  # sent, with a field dropped or cut: recorded, and counted apart
                self.summary.metrics["field_notes"] = self.summary.metrics.get("field_notes", 0) + notes
        if out.state is not None:
            self._states.append(out.state)
        if out.skipped_keys is not None and out.skipped_keys.height:
            self._skips.append(out.skipped_keys)
        for reason, n in out.skipped.items():
            self.summary.skipped += n
            self.summary.skip_reasons[reason] = self.summary.skip_reasons.get(reason, 0) + n
        for name, n in out.metrics.items():
            self.summary.metrics[name] = self.summary.metrics.get(name, 0) + n

    def _prune(self) -> None:
        from masivo_braze_sync.entities import ENTITIES  # every consumer's reads decide what may go

        account_id = self.account.account_id
        try:
            with self.db.connection() as conn:
                # every partition of every entity is a reader (docs/change-capture.md#partitions)
                parts = {name: partitions.partitions_of(conn, name, account_id) for name in ENTITIES}
                off = {
                    p.consumer: SwitchedOff(spec.captured, p.slice, recorded_as=name)
                    for name, spec in ENTITIES.items()
                    if not spec.is_enabled(self.account)
                    for p in parts[name]
                }
                skip_switched_off(conn, account_id=account_id, readers=off)
                prune(
                    conn,
                    account_id=account_id,
                    readers={p.consumer: spec.captured for name, spec in ENTITIES.items() for p in parts[name]},
                )
        except Exception:
            log.warning("account %s: could not prune the change log", self.account.account_id, exc_info=True)

    def record_summary(self) -> None:
        """Write the summary so far to `braze_sync.run_summaries` (a failure is logged, not raised)."""
        try:
            with self.db.connection() as conn:
                record_summary(conn, self.summary, self.flow_run_id)
        except Exception:
            log.warning("account %s: could not record the run summary", self.account.account_id, exc_info=True)

    def reset_summary(self) -> AccountSummary:
        """Start a fresh summary (a long-lived run's next period); returns the finished one."""
        done = self.summary
        self.summary = AccountSummary(self.account.account_id, self.entity.name)
        return done


def describe_error(exc: BaseException) -> str:
    """An operator-facing one-liner for an account's failure: our messages, or the class name.

    Messages of foreign exceptions (a driver's, an HTTP library's) may quote data, so only their
    type is shown; ours are written to carry ids and counts only.
    """
    if isinstance(exc, SyncError):
        return str(exc)
    return f"{type(exc).__name__} (see the run's logs)"
