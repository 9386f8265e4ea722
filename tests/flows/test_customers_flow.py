"""`sync customers` and `sync all` through Prefect and the CLI."""

from __future__ import annotations

from typer.testing import CliRunner

from app.cli import app


def test_sync_all_sends_customers_and_events_and_a_second_run_sends_nothing(
    prefect_api, make_account, add_events, emulator, received, db
) -> None:
    make_account("acct-1", customers=3)
    events = add_events("acct-1", 5, customer="c2")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now() WHERE id = 'c3'")

    result = CliRunner().invoke(app, ["sync", "all"])
    assert result.exit_code == 0, result.output
    assert "customers: per-account summary" in result.output
    assert "events: per-account summary" in result.output
    assert "attributes sent:" in result.output
    assert emulator.profile("acct-1", "c1").attributes == {"email": "c1@example.com"}
    assert emulator.profile("acct-1", "c3") is None  # deleted before it was ever sent
    assert sorted(received("acct-1")) == sorted(events)
    assert "c1@example.com" not in result.output  # the summary carries counts, never data

    requests = emulator.stats("acct-1").requests
    again = CliRunner().invoke(app, ["sync", "all"])
    assert again.exit_code == 0, again.output
    assert emulator.stats("acct-1").requests == requests


def test_sync_customers_for_one_account_leaves_the_others_alone(prefect_api, make_account, emulator) -> None:
    make_account("acct-1", customers=2)
    make_account("acct-2", customers=2)
    result = CliRunner().invoke(app, ["sync", "customers", "--account", "acct-2"])
    assert result.exit_code == 0, result.output
    assert emulator.profiles("acct-1") == {}
    assert set(emulator.profiles("acct-2")) == {"c1", "c2"}
