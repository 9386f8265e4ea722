"""Masivo customers → Braze user profiles (create, update, delete, tags), one run per account."""

from __future__ import annotations

from prefect import flow

from flows.common import sync_entity


@flow(name="sync-customers", persist_result=False, log_prints=False)
async def sync_customers(account_ids: list[str] | None = None) -> list[dict]:
    """Send every account's changed customers to its Braze workspace (only changed fields)."""
    return [s.as_dict() for s in await sync_entity("customers", account_ids)]
