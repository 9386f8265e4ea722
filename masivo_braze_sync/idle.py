"""Which accounts have work for an entity: the parent run starts an account run only for those.

One statement reads every account's backlog (`capture.scan_backlogs`), so an idle account costs a
row of a grouped query instead of an orchestrated run (docs/operations.md#idle). Skipping an idle
customers run holds nothing back: events, purchases and audiences read below the horizon of a
customers consumer that has nothing readable left (docs/live.md#profile-before-event), whether or
not it ran.
"""

from __future__ import annotations

from masivo_braze_sync import partitions
from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.capture import scan_backlogs
from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities import Entity


def accounts_with_work(db: Database, entity: Entity, accounts: list[AccountConfig]) -> set[str]:
    """The ids of `accounts` with changes waiting for `entity` (committed or still in flight), in
    any of their partitions of it."""
    if not accounts:
        return set()
    with db.connection() as conn:
        counts = partitions.counts(conn, entity.name, [a.account_id for a in accounts])
        readers = [
            (account, p.consumer, p.slice) for account, n in counts.items() for p in partitions.all_of(entity.name, n)
        ]
        waiting, _ = scan_backlogs(conn, entities=entity.captured, readers=readers)
    return set(waiting)
