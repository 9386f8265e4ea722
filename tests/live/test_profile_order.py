"""An account's events, purchases and audiences never read past the point its customers consumer
has caught up to, so a new customer's profile reaches Braze before its first event, in batch runs
as in live mode (docs/live.md#profile-before-event)."""

from __future__ import annotations

from tests.capture_helpers import settle


def _add_customer(db, account_id: str, customer_id: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO public.customers (account_id, id, email) VALUES (%s, %s, %s)",
            (account_id, customer_id, f"{customer_id}@example.com"),
        )


def test_an_event_waits_for_its_customers_profile_in_batch_runs(db, make_account, add_events, run_sync, received):
    make_account("acct-1")
    run_sync("acct-1", "customers")  # caught up (to nothing) once: the bound exists from here on
    _add_customer(db, "acct-1", "new")  # separate transactions: the customer commits first
    (eid,) = add_events("acct-1", customer="new")
    settle(db, "acct-1")

    held = run_sync("acct-1", "events")
    assert held.objects_sent == 0  # the profile has not been sent yet
    assert received("acct-1") == []

    run_sync("acct-1", "customers")
    run_sync("acct-1", "events")
    assert received("acct-1") == [eid]


def test_the_bound_keeps_moving_while_customers_do_not_change(db, make_account, add_events, run_sync, received):
    make_account("acct-1", customers=1)
    run_sync("acct-1", "customers")
    ids = add_events("acct-1", 3)
    settle(db, "acct-1")
    run_sync("acct-1", "customers")  # nothing to send: still records how far it has caught up
    run_sync("acct-1", "events")
    assert sorted(received("acct-1")) == sorted(ids)


def test_a_switched_off_customers_sync_does_not_hold_events_back(db, make_account, add_events, run_sync, received):
    make_account("acct-1", customers=1)
    run_sync("acct-1", "customers")
    with db.connection() as conn:
        conn.execute(
            "UPDATE public.braze_integrations "
            "SET sync_customers_create = false, sync_customers_update = false, sync_customers_delete = false"
        )
    ids = add_events("acct-1", 2)
    settle(db, "acct-1")
    run_sync("acct-1", "events")
    assert sorted(received("acct-1")) == sorted(ids)
