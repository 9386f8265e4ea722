"""What every entity flow shares: the per-account flow and the fan-out over accounts.

An entity flow (`flows/events.py`, ...) is a few lines calling `sync_entity`; the pipeline itself
is never copied. The parent looks at every account's backlog first (one query) and starts a flow
run (`sync-account`, named `<entity>-<account>`, tagged `entity:` and `account:`) only for accounts
with work; the others show as `idle` in its summary. Run history and failures stay per account:
one account's bad key or endpoint fails that run only, with its report artifact (keyed per entity
and account, so `/artifacts` is each account's history) and a `masivo.sync.failed` event, and the
parent fails at the end naming each failed account and its reason.

Known failures (`SyncError`: ours, ids and counts only) end a run as a returned `Failed` state:
one log line, no traceback, and no pickled exception under PREFECT_HOME/storage (the engine writes
one for every raised exception, whatever `persist_result` says: docs/prefect.md#failed-runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC

from prefect import flow, get_run_logger, tags
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.states import Failed, State

from flows.alerts import emit
from masivo_braze_sync import partitions
from masivo_braze_sync.accounts import AccountConfig, load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.errors import AccountSyncFailed, ConfigurationError, SyncError
from masivo_braze_sync.idle import accounts_with_work
from masivo_braze_sync.pipeline import AccountBusy, AccountRun, RunFailed
from masivo_braze_sync.run_report import account_report, artifact_key
from masivo_braze_sync.settings import get_settings
from masivo_braze_sync.signals import PreviousRun, account_signals, entity_signal
from masivo_braze_sync.status import AccountStatus, account_status, previous_run
from masivo_braze_sync.summary import AccountSummary, summary_rows
from tasks import stages
from tasks.concurrency import prefect_budget, shared_server_configured
from tasks.secrets import resolve_api_key

# every task run (one per batch) logged "Finished in state Completed()": a third of the lines of a run, none
# read. Task failures are logged at ERROR and still pass (docs/operations.md#logs)
logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)


class _NoEmptyTraceback(logging.Filter):
    """Drop the empty traceback ("NoneType: None") of a failed state logged outside an exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())

#: seconds between two updates of an account run's progress artifact (each one is an API call)
PROGRESS_SECONDS = 5.0


class ProgressBar:
    """An account run's progress artifact, kept off the critical path and updated every few seconds.

    Each Prefect API call costs tens of milliseconds; awaited between batches they delayed the
    next batch's requests (benchmarks/RESULTS.md). The calls run in the background instead, at
    most one update per `every` seconds carrying the latest value, and the last value when the
    run ends; a failure to update is logged, never fails the sync.
    """

    def __init__(self, description: str, every: float = PROGRESS_SECONDS) -> None:
        self._artifact = asyncio.create_task(acreate_progress_artifact(0.0, description=description))
        self._every = every
        self._sending: asyncio.Task | None = None
        self._closing = asyncio.Event()
        self._latest = self._shown = 0.0
        self._shown_at = time.monotonic()  # the artifact starts at 0%

    def set(self, percent: float) -> None:
        """Show `percent` done (sent in the background, within `every` seconds)."""
        self._latest = percent
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        artifact = await self._artifact
        while self._shown != self._latest:
            wait = self._shown_at + self._every - time.monotonic()
            if wait > 0 and not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)  # a close sends at once
            shown = self._latest
            await aupdate_progress_artifact(artifact, shown)
            self._shown, self._shown_at = shown, time.monotonic()

    async def close(self, percent: float | None = None) -> None:
        """Send the last value (100% by default) now and wait for the API calls to end."""
        self._closing.set()
        self.set(100.0 if percent is None else percent)
        try:
            await asyncio.gather(self._artifact, *([self._sending] if self._sending else []))
        except Exception:  # noqa: BLE001 - the bar is a convenience: the sync's outcome does not depend on it
            get_run_logger().warning("could not update the progress artifact", exc_info=True)


@flow(name="sync-account", flow_run_name="{entity}-{account_id}", persist_result=False, log_prints=False)
async def sync_account(entity: str, account_id: str, partition: int | None = None) -> dict:
    """Sync one entity for one account (one partition of it: docs/operations.md#partitions): every
    batch of its backlog, stage by stage."""
    logger = get_run_logger()
    db = Database.from_settings()
    accounts = await asyncio.to_thread(_load, db, [account_id])
    if not accounts:
        return Failed(message=f"account {account_id}: no Braze integration configured")
    previous = await asyncio.to_thread(_previous, db, account_id, entity)
    try:
        # `prefect-secret:<block>` keys are loaded here, in the run; the key is never a parameter
        account = await resolve_api_key(accounts[0])
    except ConfigurationError as exc:
        failed = AccountRun(db, ENTITIES[entity], accounts[0])  # never entered: only records the failure
        failed.flow_run_id = flow_run.get_id()
        failed.summary.status, failed.summary.error = "failed", str(exc)
        await asyncio.to_thread(failed.record_summary)
        return await _finish(db, failed.summary, previous)
    run = AccountRun(
        db,
        ENTITIES[entity],
        account,
        budget_factory=prefect_budget if shared_server_configured() else None,
        partition=partition,
    )
    run.flow_run_id = flow_run.get_id()
    bar: ProgressBar | None = None
    try:
        async with run:
            bar = ProgressBar(f"{entity} backlog of account {account_id}")
            while not (await stages.run_batches(run.step, lambda _, bar=bar: bar.set(_percent(run)))).done:
                pass
    except AccountBusy as exc:
        logger.warning("%s", exc)
        return run.summary.as_dict()
    except SyncError:
        pass  # in the summary (`AccountRun.__aexit__`); reported below in one line
    except Exception:
        # not ours: its message may quote data, so the summary names only its type; the
        # traceback (code, not data) goes to the run's logs for whoever fixes it
        logger.exception("account %s: %s failed unexpectedly", account_id, entity)
    except BaseException:  # cancelled or interrupted: the bar still shows where the run stopped
        if bar is not None:
            await bar.close(_percent(run))
        raise
    # a failed run leaves its bar where it stopped; the last update goes out with the report
    closing = bar.close(None if run.summary.status == "ok" else _percent(run)) if bar is not None else None
    return await _finish(db, run.summary, previous, closing)


def _percent(run: AccountRun) -> float:
    return 100.0 * run.progress_done / max(run.progress_total, 1)


async def _finish(
    db: Database, s: AccountSummary, previous: PreviousRun | None, closing: Awaitable[None] | None = None
) -> dict | State:
    """Log the run in one line, write its report artifact, emit its events; `Failed` if it failed.

    `closing` (the progress bar's last update) runs alongside the report: each is a round trip.
    """
    logger = get_run_logger()
    reason = (s.error or "failed").removeprefix(f"account {s.account_id}: ")
    if s.status == "failed":
        logger.error("account %s: %s failed: %s", s.account_id, s.entity, reason)
    else:
        logger.info(
            "account %s: %d rows read, %d objects sent in %d requests, %d rejected, %d skipped (%.1fs)",
            s.account_id, s.rows_read, s.objects_sent, s.requests, s.rejected, s.skipped, s.seconds,
        )  # fmt: skip

    async def report() -> None:
        status = await asyncio.to_thread(_status, db, s.account_id, s.entity)
        await acreate_markdown_artifact(
            account_report(s, status),
            key=artifact_key(s.entity, s.account_id),
            description=f"{s.entity} sync of account {s.account_id}: {s.status}",
        )

    await asyncio.gather(report(), *([closing] if closing is not None else []))
    emit(account_signals(s, previous, rejected_threshold=get_settings().alert_rejected_rows))
    if s.status == "failed":
        return Failed(message=f"account {s.account_id}: {reason}", data=RunFailed(s))
    return s.as_dict()


def parent_run_name(entity: str) -> Callable[[], str]:
    """A parent run's name: its entity and scheduled minute, `events-2026-11-30T10:01` (UTC)."""

    def name() -> str:
        return f"{entity}-{flow_run.scheduled_start_time.astimezone(UTC):%Y-%m-%dT%H:%M}"

    return name


def _load(db: Database, account_ids: list[str] | None) -> list[AccountConfig]:
    with db.connection() as conn:
        return load_accounts(conn, account_ids)


def _partition_counts(db: Database, entity: str, account_ids: list[str]) -> dict[str, int]:
    with db.connection() as conn:
        return partitions.counts(conn, entity, account_ids)


def _previous(db: Database, account_id: str, entity: str) -> PreviousRun | None:
    with db.connection() as conn:
        return previous_run(conn, account_id, entity)


def _status(db: Database, account_id: str, entity: str) -> AccountStatus | None:
    try:
        with db.connection() as conn:
            return account_status(conn, account_id, entity)
    except Exception:  # noqa: BLE001 - the report then shows the run's counts only
        get_run_logger().warning("account %s: could not read its status for the report", account_id, exc_info=True)
        return None


async def sync_entity(
    entity: str, account_ids: list[str] | None = None, partition: int | None = None
) -> list[dict] | State:
    """Run `sync_account` for every account with the entity's toggle on and a backlog: for each of
    the account's partitions of the entity at once, or only for `partition` (docs/operations.md#partitions).

    Returns the summaries (idle accounts included, as `idle`), or a `Failed` state carrying
    `AccountSyncFailed` when an account failed: an entity flow returns it as its own result.
    """
    spec = ENTITIES[entity]
    db = Database.from_settings()
    accounts = [a for a in await asyncio.to_thread(_load, db, account_ids) if spec.is_enabled(a)]
    # one query for every account's backlog: an idle account costs no flow run (docs/operations.md#idle)
    waiting = await asyncio.to_thread(accounts_with_work, db, spec, accounts)
    counts = await asyncio.to_thread(_partition_counts, db, entity, [a.account_id for a in accounts])
    limit = asyncio.Semaphore(get_settings().account_concurrency)

    async def one(account: AccountConfig, part: int | None) -> AccountSummary:
        if account.account_id not in waiting:
            return AccountSummary(account.account_id, entity, status="idle")
        async with limit:
            with tags(f"entity:{entity}", f"account:{account.account_id}"):
                state = await sync_account(entity, account.account_id, part, return_state=True)
        if state.is_completed():
            return AccountSummary(**(await state.result()))
        exc = await state.result(raise_on_failure=False)
        if isinstance(exc, RunFailed):
            return exc.summary
        return AccountSummary(account.account_id, entity, status="failed", error=state.message or str(exc)[:300])

    runs = [
        (a, p)
        for a in accounts
        for p in ([partition] if partition is not None or counts[a.account_id] == 1 else range(counts[a.account_id]))
    ]
    summaries = list(await asyncio.gather(*(one(a, p) for a, p in runs)))
    worked = [s for s in summaries if s.status != "idle"]
    idle = len(summaries) - len(worked)
    get_run_logger().info("%s: %d account(s) run, %d idle", entity, len(worked), idle)
    if worked:  # an all-idle run leaves no artifact
        await acreate_table_artifact(
            summary_rows(summaries), key=f"{entity}-sync-summary", description=f"{entity} sync, per account"
        )
    emit([entity_signal(entity, summaries)])
    failures = {s.account_id: s.error or "failed" for s in summaries if s.status == "failed"}
    if failures:
        exc = AccountSyncFailed(failures, summaries)
        return Failed(message=str(exc), data=exc)
    return [s.as_dict() for s in summaries]
