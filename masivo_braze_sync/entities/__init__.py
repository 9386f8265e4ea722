"""Per-entity mappings from Masivo rows to Braze objects. Each one is an `Entity`."""

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.capture import Bound
from masivo_braze_sync.entities.audiences import AUDIENCES
from masivo_braze_sync.entities.base import AccountContext, Entity, Prepared
from masivo_braze_sync.entities.customers import CUSTOMERS
from masivo_braze_sync.entities.events import EVENTS
from masivo_braze_sync.entities.purchases import PURCHASES
from masivo_braze_sync.partitions import Partition

#: every entity the pipeline can sync, by consumer name, in the order `sync all` runs them
#: (customers first: their deletes must reach Braze before anything else is sent for them)
ENTITIES: dict[str, Entity] = {e.name: e for e in (CUSTOMERS, EVENTS, PURCHASES, AUDIENCES)}


def ledger_bounds(
    entity: Entity, account: AccountConfig, customers: list[Partition] | None = None
) -> dict[str, object]:
    """The `Ledger` options that keep an account's profiles ahead of what refers to them.

    The customers consumer records the horizon it has caught up to; an entity declared
    `after_customers` reads only below it, when the account syncs customers at all (a stale horizon
    of a switched-off customers sync must not hold the others back). docs/live.md#profile-before-event
    With customers in partitions (`customers`: the account's partitions of it), the bound is the
    lowest horizon of them all, whatever the reading entity's own partitions
    (docs/change-capture.md#partitions).
    """
    if entity is CUSTOMERS:
        return {"tracks_catch_up": True}
    if entity.after_customers and CUSTOMERS.is_enabled(account):
        parts = customers or [Partition(CUSTOMERS.name)]
        return {"bound_by": Bound(tuple((p.consumer, p.slice) for p in parts), CUSTOMERS.captured)}
    return {}


__all__ = [
    "AUDIENCES",
    "CUSTOMERS",
    "ENTITIES",
    "EVENTS",
    "PURCHASES",
    "AccountContext",
    "Entity",
    "Prepared",
    "ledger_bounds",
]
