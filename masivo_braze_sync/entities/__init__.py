"""Per-entity mappings from Masivo rows to Braze objects. Each one is an `Entity`."""

from masivo_braze_sync.entities.base import Entity, Prepared
from masivo_braze_sync.entities.events import EVENTS

#: every entity the pipeline can sync, by consumer name (`sync all` runs them in this order)
ENTITIES: dict[str, Entity] = {EVENTS.name: EVENTS}

__all__ = ["ENTITIES", "EVENTS", "Entity", "Prepared"]
