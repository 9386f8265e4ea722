"""Live mode end to end: a wake-up per commit, micro-batches through the same run, in order."""

from __future__ import annotations

import time

import psycopg

from masivo_braze_sync.pipeline import AccountBusy
from masivo_braze_sync.settings import Settings
from tests.live.conftest import wait_for


def test_a_committed_event_reaches_braze_without_a_scheduled_run(make_account, add_events, received, live):
    make_account("acct-1", customers=2)
    session = live()
    wait_for(lambda: session.session.totals, what="the customers to be sent")
    ids = add_events("acct-1", 3, customer="c1")
    wait_for(lambda: sorted(received("acct-1")) == sorted(ids), what="the events to arrive")
    wait_for(lambda: any(line.consumer == "events" for line in session.lines), what="a printed micro-batch")


def test_a_wake_up_held_by_an_older_transaction_is_delivered_when_it_ends(
    make_account, add_events, received, live, database_url
):
    make_account("acct-1", customers=1)
    session = live(entities=["events"], settings=Settings(live_sweep_seconds=600))  # no sweep to the rescue
    with psycopg.connect(database_url) as older:
        older.execute("SELECT pg_current_xact_id()")  # an open transaction with an id holds the horizon
        ids = add_events("acct-1", 2)  # commits and notifies, but sits above the horizon
        time.sleep(0.5)  # the live session wakes up and looks (several times) while the horizon is held
        assert received("acct-1") == []
        assert "events" in session.session.workers["acct-1"].pending
    # the older transaction ended (no new notification for these rows): the pending look finds them
    wait_for(lambda: sorted(received("acct-1")) == sorted(ids), what="the held events to arrive")


def test_an_idle_live_session_lets_go_of_its_locks_and_a_scheduled_run_takes_over(
    make_account, add_events, received, live, run_sync
):
    make_account("acct-1", customers=1)
    session = live(entities=["events"], settings=Settings(live_idle_close_seconds=0.3, live_sweep_seconds=600))
    first = add_events("acct-1", 2)
    wait_for(lambda: sorted(received("acct-1")) == sorted(first), what="the live session's events")
    assert session.session.workers["acct-1"].runs  # the run (and its lock's session) is open while busy
    wait_for(lambda: not session.session.workers["acct-1"].runs, what="the idle run to close")
    # not AccountBusy: the idle session holds no lock (its backend may need a moment to let go)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert run_sync("acct-1").status == "ok"
            break
        except AccountBusy:
            assert time.monotonic() < deadline, "the idle live session kept its lock"
            time.sleep(0.1)
    later = add_events("acct-1", 3)  # the session opens its run again on the wake-up
    wait_for(lambda: sorted(received("acct-1")) == sorted(first + later), what="the later events")
