"""Masivo audience membership → Braze custom attributes: the sync (one flow run per account) and
the manual resync of one audience (`masivo_braze_sync/resync.py`)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run

from flows.common import parent_run_name, sync_entity
from masivo_braze_sync import resync
from masivo_braze_sync.db import Database
from masivo_braze_sync.summary import summary_rows
from tasks.concurrency import prefect_budget, shared_server_configured
from tasks.secrets import resolve_api_key


@flow(name="sync-audiences", flow_run_name=parent_run_name("audiences"), persist_result=False, log_prints=False)
async def sync_audiences(account_ids: list[str] | None = None, partition: int | None = None) -> list[dict]:
    """Send every account's audience joins, leaves, renames and deletes (Audiences toggle on)."""
    return await sync_entity("audiences", account_ids, partition)


@flow(
    name="resync-audience",
    flow_run_name="resync-audience-{account_id}-{audience_id}",
    persist_result=False,
    log_prints=False,
)
async def resync_audience(account_id: str, audience_id: str) -> dict:
    """Re-send `masivo_<audience name>` = true to every current member of one audience.

    Args:
        account_id: The Masivo account whose Braze workspace gets the audience again (its id, as in
            `masivo-braze status`).
        audience_id: The audience to re-send, from Masivo's `audiences` table of that account.
    """
    summary = await resync.resync_audience(
        Database.from_settings(),
        account_id,
        audience_id,
        flow_run_id=flow_run.get_id(),
        resolve_account=resolve_api_key,  # `prefect-secret:<block>` keys, as in a sync run
        budget_factory=prefect_budget if shared_server_configured() else None,
    )
    await acreate_table_artifact(
        summary_rows([summary]), description=f"resync of audience {audience_id} of account {account_id}"
    )
    return summary.as_dict()
