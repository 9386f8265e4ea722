"""Masivo order lines → Braze purchases (and their reversals), one flow run per account."""

from __future__ import annotations

from prefect import flow

from flows.common import parent_run_name, sync_entity


@flow(name="sync-purchases", flow_run_name=parent_run_name("purchases"), persist_result=False, log_prints=False)
async def sync_purchases(account_ids: list[str] | None = None, partition: int | None = None) -> list[dict]:
    """Send every account's fulfilled, reversed and cancelled orders to its Braze workspace (Purchases toggle on)."""
    return await sync_entity("purchases", account_ids, partition)
