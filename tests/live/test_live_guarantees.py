"""Live mode keeps every guarantee of the batch runs: nothing skipped, nothing twice, profiles first."""

from __future__ import annotations

import time
from collections import Counter

from masivo_braze_sync.pipeline import AccountBusy
from tests.capture_helpers import Writers
from tests.live.conftest import wait_for


def test_six_writers_with_long_transactions_and_rollbacks_every_committed_event_arrives_once(
    make_account, received, live, database_url
):
    make_account("acct-1", customers=5)
    live()
    writers = Writers(database_url, "acct-1", transactions=5, holds=(0.005, 0.05, 0.3, 1.0)).start()
    writers.join()
    # no scheduled run and no sweep is needed: the wake-ups alone bring every committed event
    wait_for(lambda: set(received("acct-1")) >= set(writers.committed), what="every committed event")
    time.sleep(0.3)  # anything sent twice would show up now
    got = Counter(received("acct-1"))
    assert set(got) == set(writers.committed)
    assert all(n == 1 for n in got.values()), "an event was delivered twice"
    assert not set(got) & set(writers.rolled_back)


def test_live_and_scheduled_runs_on_the_same_account_send_nothing_twice(
    make_account, add_events, received, live, run_sync
):
    make_account("acct-1", customers=3)
    live()
    ids: list[str] = []
    busy = 0
    for _ in range(15):
        ids += add_events("acct-1", 40, customer="c2")
        try:
            run_sync("acct-1")  # whichever holds the (events, account) lock works; the other skips
        except AccountBusy:
            busy += 1
    wait_for(lambda: set(received("acct-1")) >= set(ids), what="every event")
    time.sleep(0.3)
    got = Counter(received("acct-1"))
    assert set(got) == set(ids)
    assert all(n == 1 for n in got.values()), "an event was delivered twice"


def test_a_new_customers_profile_arrives_before_its_first_event(db, make_account, emulator, live):
    make_account("acct-1")
    live()
    for n in range(8):
        with db.connection() as conn:  # the customer commits first ...
            conn.execute(
                "INSERT INTO customers (account_id, id, email) VALUES ('acct-1', %s, %s)",
                (f"n{n}", f"n{n}@example.com"),
            )
        with db.connection() as conn:  # ... its first event a moment later, in its own transaction
            conn.execute(
                "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                "VALUES (%s, 'acct-1', %s, 'VISIT', '{}', now())",
                (f"ev{n}", f"n{n}"),
            )
    wait_for(lambda: sum(a == "events" for _, a, _ in emulator.arrivals("acct-1")) == 8, what="the events")
    first_seen: dict[str, str] = {}
    for _, array, obj in emulator.arrivals("acct-1"):
        first_seen.setdefault(obj["external_id"], array)
    assert first_seen == {f"n{n}": "attributes" for n in range(8)}
