"""Masivo customers → Braze user profiles (create, update, delete, tags), one run per account."""

from __future__ import annotations

from prefect import flow

from flows.common import parent_run_name, sync_entity


@flow(name="sync-customers", flow_run_name=parent_run_name("customers"), persist_result=False, log_prints=False)
async def sync_customers(account_ids: list[str] | None = None, partition: int | None = None) -> list[dict]:
    """Send every account's changed customers to its Braze workspace (only changed fields)."""
    return await sync_entity("customers", account_ids, partition)
