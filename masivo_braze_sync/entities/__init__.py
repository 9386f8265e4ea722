"""Per-entity mappings from Masivo rows to Braze objects. Each one is an `Entity`."""

from masivo_braze_sync.entities.audiences import AUDIENCES
from masivo_braze_sync.entities.base import AccountContext, Entity, Prepared
from masivo_braze_sync.entities.customers import CUSTOMERS
from masivo_braze_sync.entities.events import EVENTS
from masivo_braze_sync.entities.purchases import PURCHASES

#: every entity the pipeline can sync, by consumer name, in the order `sync all` runs them
#: (customers first: their deletes must reach Braze before anything else is sent for them)
ENTITIES: dict[str, Entity] = {e.name: e for e in (CUSTOMERS, EVENTS, PURCHASES, AUDIENCES)}

__all__ = ["AUDIENCES", "CUSTOMERS", "ENTITIES", "EVENTS", "PURCHASES", "AccountContext", "Entity", "Prepared"]
