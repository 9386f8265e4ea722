"""Prefect flows: one module per entity, each fanning out one run per account."""

from flows.audiences import sync_audiences
from flows.customers import sync_customers
from flows.events import sync_events
from flows.purchases import sync_purchases
from masivo_braze_sync.memory import limit_malloc_arenas

#: the entity flows by consumer name (`masivo-braze sync <name>`)
FLOWS = {"customers": sync_customers, "events": sync_events, "purchases": sync_purchases, "audiences": sync_audiences}

# a worker process imports the flows before its threads allocate: its one chance to cap malloc's
# arenas (masivo_braze_sync/memory.py says why)
limit_malloc_arenas()

__all__ = ["FLOWS", "sync_audiences", "sync_customers", "sync_events", "sync_purchases"]
