"""Prefect flows: one module per entity, each fanning out one run per account."""

from flows.audiences import sync_audiences
from flows.customers import sync_customers
from flows.events import sync_events
from flows.purchases import sync_purchases

#: the entity flows by consumer name (`masivo-braze sync <name>`)
FLOWS = {"customers": sync_customers, "events": sync_events, "purchases": sync_purchases, "audiences": sync_audiences}

__all__ = ["FLOWS", "sync_audiences", "sync_customers", "sync_events", "sync_purchases"]
