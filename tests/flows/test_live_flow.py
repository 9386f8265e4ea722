"""The sync-live flow: one flow run per session, a bounded lifetime, a bad key isolated to its account."""

from __future__ import annotations

import asyncio

from flows.live import ARTIFACT_KEY, sync_live
from tests.flows.test_events_flow import _artifacts


def test_a_live_session_sends_each_account_and_ends_after_its_lifetime(
    prefect_api, make_account, add_events, received
) -> None:
    make_account("good", customers=1)
    ids = add_events("good", 20)
    make_account("revoked", customers=1, api_key="not-the-key")
    add_events("revoked", 5)

    rows = asyncio.run(sync_live(account_ids=["good", "revoked"], max_minutes=0.1))

    assert sorted(received("good")) == sorted(ids)  # the bad key of the other account held nothing up
    by_pair = {(r["account_id"], r["consumer"]): r for r in rows}
    assert by_pair[("good", "events")]["objects_sent"] == 20
    assert by_pair[("revoked", "customers")]["status"] == "failed"
    assert "not-the-key" not in repr(rows)
    assert asyncio.run(_artifacts(ARTIFACT_KEY))
