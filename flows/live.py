"""Live mode as a Prefect flow: one flow run per live session (docs/live.md#prefect).

The session (`masivo_braze_sync.live`) does the work; this flow only starts it, bounds its
lifetime and shows it: no task run per micro-batch (Prefect API calls per minute do not grow with
the traffic), one summary artifact refreshed at most every `live_summary_seconds`, logs with ids and
counts only. The shared per-workspace budget is taken in blocks (`BlockBudget`), not per request.
The deployment starts the next session when this one ends or crashes (prefect.yaml `triggers`).
"""

from __future__ import annotations

import asyncio
import contextlib

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from masivo_braze_sync.db import Database
from masivo_braze_sync.live import LiveSession
from masivo_braze_sync.settings import get_settings
from tasks.concurrency import prefect_budget, shared_server_configured
from tasks.secrets import resolve_api_key

#: the artifact key: one artifact whose versions are the session's summaries
ARTIFACT_KEY = "sync-live-summary"


@flow(name="sync-live", persist_result=False, log_prints=False)
async def sync_live(
    entities: list[str] | None = None, account_ids: list[str] | None = None, max_minutes: float = 60.0
) -> list[dict]:
    """Send changes of the chosen entities and accounts (default all) as they commit, for
    `max_minutes`; then end cleanly so that the deployment's trigger starts a fresh session."""
    logger = get_run_logger()
    settings = get_settings()
    session = LiveSession(
        Database.from_settings(),
        entities=entities,
        account_ids=account_ids,
        settings=settings,
        budget_factory=prefect_budget if shared_server_configured() else None,
        prepare_account=resolve_api_key,
        flow_run_id=flow_run.get_id(),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(session.run(stop))
    deadline = asyncio.get_running_loop().time() + max_minutes * 60
    try:
        while not running.done():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                stop.set()  # the batches in flight finish; the runs close and record their summaries
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(running), min(left, settings.live_summary_seconds))
            await _report(session, logger)
        await running
    finally:
        stop.set()
        if not running.done():
            await asyncio.wait([running])
    await _report(session, logger)
    return session.summary_rows()


async def _report(session: LiveSession, logger) -> None:
    rows = session.summary_rows()
    if not rows:
        return
    logger.info(
        "live: %d accounts, %d micro-batches, %d objects in %d requests so far; %d failing",
        len({r["account_id"] for r in rows}),
        sum(r["batches"] for r in rows),
        sum(r["objects_sent"] for r in rows),
        sum(r["requests"] for r in rows),
        sum(r["status"] == "failed" for r in rows),
    )
    await acreate_table_artifact(rows, key=ARTIFACT_KEY, description="live session, per account and entity")
