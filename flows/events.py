"""Masivo behavioral events → Braze custom events, one flow run per account."""

from __future__ import annotations

from prefect import flow

from flows.common import parent_run_name, sync_entity


@flow(name="sync-events", flow_run_name=parent_run_name("events"), persist_result=False, log_prints=False)
async def sync_events(account_ids: list[str] | None = None, partition: int | None = None) -> list[dict]:
    """Send every account's new events to its Braze workspace (Events toggle on)."""
    return await sync_entity("events", account_ids, partition)
