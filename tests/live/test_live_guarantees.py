"""Live mode keeps every guarantee of the batch runs: nothing skipped, nothing twice, profiles first."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import psycopg

from masivo_braze_sync.pipeline import AccountBusy
from tests.live.conftest import wait_for


def test_six_writers_with_long_transactions_and_rollbacks_every_committed_event_arrives_once(
    make_account, received, live, database_url
):
    make_account("acct-1", customers=5)
    live()
    committed: list[str] = []
    rolled_back: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(database_url) as conn:
            for txn in range(5):
                ids = [f"w{n}-t{txn}-e{i}" for i in range(rng.randint(1, 30))]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                        "VALUES (%s, 'acct-1', %s, 'VISIT', jsonb_build_object('eid', %s::text), now())",
                        [(i, f"c{1 + rng.randrange(5)}", i) for i in ids],
                    )
                time.sleep(rng.choice([0.005, 0.05, 0.3, 1.0]))  # hold the transaction open
                if rng.random() < 0.2:
                    conn.rollback()
                    with lock:
                        rolled_back.extend(ids)
                else:
                    conn.commit()
                    with lock:
                        committed.extend(ids)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    # no scheduled run and no sweep is needed: the wake-ups alone bring every committed event
    wait_for(lambda: set(received("acct-1")) >= set(committed), what="every committed event")
    time.sleep(0.3)  # anything sent twice would show up now
    got = Counter(received("acct-1"))
    assert set(got) == set(committed)
    assert all(n == 1 for n in got.values()), "an event was delivered twice"


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
