"""Prefect flows: one module per entity, each fanning out one run per account."""

from flows.events import sync_events

#: the entity flows by consumer name (`masivo-braze sync <name>`)
FLOWS = {"events": sync_events}

__all__ = ["FLOWS", "sync_events"]
