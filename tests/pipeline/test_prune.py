"""The change log is pruned only below what every consumer reading it has committed."""

from __future__ import annotations

from tests.capture_helpers import settle


def _log_rows(db, entity: str) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) FROM braze_sync.change_log WHERE entity = %s", (entity,)).fetchone()[0]


def test_rows_go_once_their_readers_are_past_them_and_not_before(make_account, add_events, run_sync, db) -> None:
    make_account("acct-1", customers=3)
    add_events("acct-1", 10)
    assert _log_rows(db, "customers") == 3

    run_sync("acct-1")  # events read: their rows may go; customers' rows wait for the customers flow
    assert _log_rows(db, "events") == 0
    assert _log_rows(db, "customers") == 3

    run_sync("acct-1", "customers")
    assert _log_rows(db, "customers") == 0

    add_events("acct-1", 2)
    assert _log_rows(db, "events") == 2  # new changes stay until delivered
    settle(db, "acct-1")  # (other sessions of a shared server may hold the horizon a moment)
    run_sync("acct-1", "customers")  # events wait for the customers consumer (docs/live.md#profile-before-event)
    assert run_sync("acct-1").objects_sent == 2


def test_an_entity_switched_off_drops_its_changes_and_counts_them(make_account, add_events, run_sync, db) -> None:
    from masivo_braze_sync.status import status_rows

    make_account("acct-1", customers=3, sync_events=False)
    add_events("acct-1", 5)  # made while events are off: never to be sent
    settle(db, "acct-1")  # other sessions on the server may hold the horizon back for a moment
    run_sync("acct-1", "customers")  # any sync of the account lets the switched-off consumers go
    assert _log_rows(db, "events") == 0
    with db.connection() as conn:
        row = next(r for r in status_rows(conn) if r["entity"] == "events")
        assert (row["enabled"], row["backlog"], row["dropped_while_off"]) == (False, 0, 5)
        conn.execute("UPDATE braze_integrations SET sync_events = true WHERE account_id = 'acct-1'")

    ids = add_events("acct-1", 2)  # switched on: what happens from now on is sent, not the old changes
    settle(db, "acct-1")
    summary = run_sync("acct-1")
    assert (summary.rows_read, summary.objects_sent) == (2, 2)
    assert len(ids) == 2
