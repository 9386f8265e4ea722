"""Changing how many partitions an account's entity has: send each lagging partition's changes up
to a common position, then switch at the barrier (`partitions.change_count`,
docs/change-capture.md#partitions).

The barrier holds only when every partition has sent everything up to the furthest cursor among
them. Partitions run at different paces, so that is rarely true by itself while changes keep
coming: the lagging partitions are run here, each stopped at that cursor (`AccountRun(upto=...)`),
and the switch is tried again. A partition that a worker keeps syncing meanwhile moves the common
position on; after a few rounds the change gives up and says to stop the workers first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities import Entity
from masivo_braze_sync.partitions import Change, PartitionsBusy, PartitionsLag, change_count
from masivo_braze_sync.pipeline import AccountRun

#: drain-and-switch attempts before giving up (each drain catches the lagging partitions up)
ROUNDS = 5


async def repartition(db: Database, entity: Entity, account: AccountConfig, count: int, **run_options: Any) -> Change:
    """Give `entity` `count` partitions for the account; returns what changed.

    `run_options` go to the `AccountRun` of each drained partition (a transport, a budget factory).
    Raises PartitionsBusy when a sync of a partition is running, or the partitions kept moving.
    """
    for _ in range(ROUNDS):
        try:
            return await asyncio.to_thread(change_count, db, entity.name, entity.captured, account.account_id, count)
        except PartitionsLag as lag:
            for part in lag.lagging:
                async with AccountRun(db, entity, account, partition=part.index, upto=lag.start, **run_options) as run:
                    await run.run()
    raise PartitionsBusy(
        f"account {account.account_id}: the partitions of {entity.name} kept moving while they were caught up; "
        "stop the syncs of this account and run the change again"
    )
