"""What every entity flow shares: the per-account flow and the fan-out over accounts.

An entity flow (`flows/events.py`, ...) is a few lines calling `sync_entity`; the pipeline itself
is never copied. Each account gets its own flow run (`sync-account`, named `<entity>-<account>`),
so run history and failures stay per account: one account's bad key or endpoint fails that run
only, and the parent flow fails at the end naming the accounts that failed.
"""

from __future__ import annotations

import asyncio

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.runtime import flow_run

from masivo_braze_sync.accounts import AccountConfig, load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.errors import AccountSyncFailed, ConfigurationError, SyncError
from masivo_braze_sync.pipeline import AccountBusy, AccountRun, RunFailed
from masivo_braze_sync.settings import get_settings
from masivo_braze_sync.summary import AccountSummary, summary_rows
from tasks import stages
from tasks.concurrency import prefect_budget, shared_server_configured
from tasks.secrets import resolve_api_key


class ProgressBar:
    """An account run's progress artifact, kept off the critical path.

    Each Prefect API call costs tens of milliseconds; awaited between batches they delayed the
    next batch's requests (benchmarks/RESULTS.md). The calls run in the background instead and
    only the latest value is sent; a failure to update is logged, never fails the sync.
    """

    def __init__(self, description: str) -> None:
        self._artifact = asyncio.create_task(acreate_progress_artifact(0.0, description=description))
        self._sending: asyncio.Task | None = None
        self._latest = 0.0

    def set(self, percent: float) -> None:
        """Show `percent` done (sent in the background)."""
        self._latest = percent
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send())

    async def _send(self) -> None:
        sent = None
        while sent != self._latest:
            sent = self._latest
            await aupdate_progress_artifact(await self._artifact, sent)

    async def close(self, percent: float | None = None) -> None:
        """Send the last value (100% by default) and wait for the API calls to end."""
        self.set(100.0 if percent is None else percent)
        try:
            await asyncio.gather(self._artifact, *([self._sending] if self._sending else []))
        except Exception:  # noqa: BLE001 - the bar is a convenience: the sync's outcome does not depend on it
            get_run_logger().warning("could not update the progress artifact", exc_info=True)


@flow(name="sync-account", flow_run_name="{entity}-{account_id}", persist_result=False, log_prints=False)
async def sync_account(entity: str, account_id: str) -> dict:
    """Sync one entity for one account: every batch of its backlog, stage by stage."""
    logger = get_run_logger()
    db = Database.from_settings()
    accounts = await asyncio.to_thread(_load, db, [account_id])
    if not accounts:
        raise SyncError(f"account {account_id}: no Braze integration configured")
    try:
        # `prefect-secret:<block>` keys are loaded here, in the run; the key is never a parameter
        account = await resolve_api_key(accounts[0])
    except ConfigurationError as exc:
        failed = AccountRun(db, ENTITIES[entity], accounts[0])  # never entered: only records the failure
        failed.flow_run_id = flow_run.get_id()
        failed.summary.status, failed.summary.error = "failed", str(exc)
        await asyncio.to_thread(failed.record_summary)
        raise RunFailed(failed.summary) from None
    run = AccountRun(
        db,
        ENTITIES[entity],
        account,
        budget_factory=prefect_budget if shared_server_configured() else None,
    )
    run.flow_run_id = flow_run.get_id()
    bar: ProgressBar | None = None
    try:
        async with run:
            bar = ProgressBar(f"{entity} backlog of account {account_id}")
            while await stages.run_batch(run.step) is not None:
                bar.set(100.0 * run.progress_done / max(run.progress_total, 1))
    except AccountBusy as exc:
        logger.warning("%s", exc)
        return run.summary.as_dict()
    except Exception as exc:
        raise RunFailed(run.summary) from exc
    finally:
        if bar is not None:
            # a failed run leaves its bar where it stopped
            await bar.close(
                None if run.summary.status == "ok" else 100.0 * run.progress_done / max(run.progress_total, 1)
            )
    s = run.summary
    logger.info(
        "account %s: %d rows read, %d objects sent in %d requests, %d rejected, %d skipped (%.1fs)",
        account_id, s.rows_read, s.objects_sent, s.requests, s.rejected, s.skipped, s.seconds,
    )  # fmt: skip
    await acreate_table_artifact(summary_rows([s]), description=f"{entity} sync of account {account_id}")
    return s.as_dict()


def _load(db: Database, account_ids: list[str] | None) -> list[AccountConfig]:
    with db.connection() as conn:
        return load_accounts(conn, account_ids)


async def sync_entity(entity: str, account_ids: list[str] | None = None) -> list[AccountSummary]:
    """Run `sync_account` for every account with the entity's toggle on; raise if any failed."""
    spec = ENTITIES[entity]
    db = Database.from_settings()
    accounts = [a for a in await asyncio.to_thread(_load, db, account_ids) if spec.is_enabled(a)]
    limit = asyncio.Semaphore(get_settings().account_concurrency)

    async def one(account: AccountConfig) -> AccountSummary:
        async with limit:
            state = await sync_account(entity, account.account_id, return_state=True)
        if state.is_completed():
            return AccountSummary(**(await state.result()))
        exc = await state.result(raise_on_failure=False)
        if isinstance(exc, RunFailed):
            return exc.summary
        return AccountSummary(account.account_id, entity, status="failed", error=str(exc)[:300])

    summaries = list(await asyncio.gather(*(one(a) for a in accounts)))
    if summaries:
        await acreate_table_artifact(
            summary_rows(summaries), key=f"{entity}-sync-summary", description=f"{entity} sync, per account"
        )
    failures = {s.account_id: s.error or "failed" for s in summaries if s.status == "failed"}
    if failures:
        raise AccountSyncFailed(failures, summaries)
    return summaries
