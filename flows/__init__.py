"""Prefect flows: one module per entity, each fanning out one run per account."""

from flows.customers import sync_customers
from flows.events import sync_events

#: the entity flows by consumer name (`masivo-braze sync <name>`)
FLOWS = {"customers": sync_customers, "events": sync_events}

__all__ = ["FLOWS", "sync_customers", "sync_events"]
