"""One run at a time per (entity, account): a second one skips and says so."""

from __future__ import annotations

import asyncio
import os

import pytest

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import CUSTOMERS, EVENTS
from masivo_braze_sync.pipeline import AccountBusy, AccountRun


def test_a_second_run_of_the_same_entity_and_account_is_refused_while_the_first_runs(
    make_account, add_events, received
) -> None:
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 10)
    db = Database(os.environ["MASIVO_DATABASE_URL"])
    with db.connection() as conn:
        (account,) = load_accounts(conn, ["acct-1"])

    async def scenario() -> None:
        async with AccountRun(db, EVENTS, account) as first:
            with pytest.raises(AccountBusy, match="another events sync is running"):
                async with AccountRun(db, EVENTS, account):
                    pass
            # another entity of the same account is not blocked
            async with AccountRun(db, CUSTOMERS, account) as other:
                await other.run()
            await first.run()
        # once the first run is over, the lock is free again
        async with AccountRun(db, EVENTS, account) as again:
            assert (await again.run()).rows_read == 0

    asyncio.run(scenario())
    assert sorted(received("acct-1")) == sorted(ids)  # sent once, by the first run
