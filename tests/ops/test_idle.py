"""The parent's look at every backlog (no Prefect): which accounts have work, and an idle customers
consumer still records how far it has caught up, as a run finding nothing would, so events are not
held back by a stale bound (docs/live.md#profile-before-event)."""

from __future__ import annotations

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.entities import CUSTOMERS, EVENTS
from masivo_braze_sync.idle import accounts_with_work
from tests.capture_helpers import settle


def test_only_accounts_with_changes_after_their_cursor_have_work(db, make_account, add_events, run_sync) -> None:
    for account in ("a", "b", "c"):
        make_account(account, customers=1)
    add_events("a", 2)
    add_events("b", 1)
    settle(db)
    run_sync("b", "events")  # b is caught up: idle again
    with db.connection() as conn:
        accounts = load_accounts(conn)
    assert accounts_with_work(db, EVENTS, accounts) == {"a"}


def test_an_idle_customers_account_keeps_the_events_bound_moving(
    db, make_account, add_events, run_sync, received
) -> None:
    make_account("acct-1", customers=1)
    run_sync("acct-1", "customers")  # the bound exists from here on
    ids = add_events("acct-1", 3)
    settle(db, "acct-1")
    with db.connection() as conn:
        accounts = load_accounts(conn)
    assert accounts_with_work(db, CUSTOMERS, accounts) == set()  # no customers run is started...
    run_sync("acct-1", "events")
    assert sorted(received("acct-1")) == sorted(ids)  # ...and the events still go
