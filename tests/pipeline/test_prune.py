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
