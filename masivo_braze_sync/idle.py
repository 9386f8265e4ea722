"""Which accounts have work for an entity: the parent run starts an account run only for those.

One statement reads every account's backlog (`capture.scan_backlogs`), so an idle account costs a
row of a grouped query instead of an orchestrated run (docs/operations.md#idle). Skipping a run
must not skip what a run that found nothing would have recorded: the customers consumer notes the
horizon it has caught up to, and events, purchases and audiences never read past it
(docs/live.md#profile-before-event). For idle accounts that horizon is recorded here, from the same
statement that found nothing to read.
"""

from __future__ import annotations

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.capture import record_caught_up, scan_backlogs
from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities import Entity, ledger_bounds


def accounts_with_work(db: Database, entity: Entity, accounts: list[AccountConfig]) -> set[str]:
    """The ids of `accounts` with changes waiting for `entity` (committed or still in flight)."""
    if not accounts:
        return set()
    with db.connection() as conn:
        waiting, horizon = scan_backlogs(
            conn, consumer=entity.name, entities=entity.captured, account_ids=[a.account_id for a in accounts]
        )
        for account in accounts:
            if account.account_id not in waiting and ledger_bounds(entity, account).get("tracks_catch_up"):
                record_caught_up(conn, consumer=entity.name, account_id=account.account_id, horizon=horizon)
    return set(waiting)
