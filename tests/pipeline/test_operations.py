"""Operator commands on a known state: status, rejected, retry-rejected, and full resyncs."""

from __future__ import annotations

import contextlib
from collections import Counter

from typer.testing import CliRunner

from app.cli import app
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.errors import AuthenticationError
from masivo_braze_sync.requeue import full_resync


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_backlog_last_success_last_error_and_rejected(make_account, add_events, run_sync) -> None:
    make_account("acct-1", customers=1)
    add_events("acct-1", 2, customer="nobody")  # rejected: unknown customer
    run_sync("acct-1")
    add_events("acct-1", 3)  # waiting for the next run
    make_account("acct-2", customers=1, api_key="wrong")
    add_events("acct-2", 1)
    with contextlib.suppress(AuthenticationError):  # the failure is what status must show
        run_sync("acct-2")

    out = _cli("status")
    lines = {tuple(line.split("│")[1:4]): line for line in out.splitlines() if "│" in line}
    events_1 = next(v for k, v in lines.items() if "acct-1" in k[0] and "events" in k[1])
    events_2 = next(v for k, v in lines.items() if "acct-2" in k[0] and "events" in k[1])
    cells_1 = [c.strip() for c in events_1.split("│")[1:-1]]
    cells_2 = [c.strip() for c in events_2.split("│")[1:-1]]
    header = next(line for line in out.splitlines() if "┃" in line)
    col = {name.strip(): i for i, name in enumerate(header.split("┃")[1:-1])}
    assert [cells_1[col["on"]], cells_1[col["backlog"]]] == ["yes", "3"]  # on, backlog of 3
    assert cells_1[col["last success"]] != "never"
    assert cells_1[col["rejected"]] == "2"
    assert cells_2[col["last success"]] == "never"
    assert "refused the API key" in cells_2[col["last error"]]  # (401) follows on the folded line
    assert "wrong" not in out


def test_rejected_lists_reasons_and_retry_rejected_sends_them_once_fixed(
    make_account, add_events, run_sync, received, db
) -> None:
    make_account("acct-1", customers=1)
    orphans = add_events("acct-1", 2, customer="late")
    run_sync("acct-1")
    out = _cli("rejected")
    assert out.count("customer not found") == 2
    for event_id in orphans:
        assert event_id in out

    with db.connection() as conn:  # the fix: the customer now exists
        conn.execute("INSERT INTO customers (account_id, id) VALUES ('acct-1', 'late')")
    out = _cli("retry-rejected", "--entity", "events")
    assert "events/acct-1: 2 rejected rows queued again" in out
    summary = run_sync("acct-1")
    assert summary.objects_sent == 2
    assert sorted(received("acct-1")) == sorted(orphans)
    assert _cli("rejected").strip() == "no rejected rows waiting"


def test_full_resync_of_events_never_resends_what_was_delivered_unless_asked(
    make_account, add_events, run_sync, received, database_url
) -> None:
    make_account("acct-1", customers=1)
    first = add_events("acct-1", 100)
    run_sync("acct-1")
    db = Database(database_url)
    assert full_resync(db, ENTITIES["events"], "acct-1") == 0  # everything was delivered
    assert run_sync("acct-1").requests == 0

    assert full_resync(db, ENTITIES["events"], "acct-1", resend=True) == 100
    run_sync("acct-1")
    assert Counter(received("acct-1")) == Counter({e: 2 for e in first})


def test_full_resync_of_customers_sends_every_profile_as_new(make_account, run_sync, emulator, database_url) -> None:
    make_account("acct-1", customers=5)
    run_sync("acct-1", "customers")
    emulator.reset()  # a new, empty workspace
    assert full_resync(Database(database_url), ENTITIES["customers"], "acct-1") == 5
    summary = run_sync("acct-1", "customers")
    assert summary.objects_sent == 5
    assert emulator.profile("acct-1", "c3").attributes == {"email": "c3@example.com"}


def test_status_says_when_events_wait_for_unsent_customer_changes(make_account, add_events, run_sync, db) -> None:
    from tests.capture_helpers import settle

    make_account("acct-1", customers=2)
    settle(db, "acct-1")
    run_sync("acct-1", "customers")  # caught up: the customers consumer records its horizon
    with db.connection() as conn:
        conn.execute("UPDATE customers SET first_name = 'Ana' WHERE account_id = 'acct-1' AND id = 'c1'")
    add_events("acct-1", 3, customer="c1")  # after the customer change: must not overtake it
    settle(db, "acct-1")
    assert run_sync("acct-1").rows_read == 0  # held below the customers' horizon
    out = _cli("status")
    assert "acct-1/events: waits for the customers sync (1 customer changes unsent" in " ".join(out.split())

    run_sync("acct-1", "customers")
    assert run_sync("acct-1").objects_sent == 3
    assert "waits for the customers sync" not in _cli("status")
