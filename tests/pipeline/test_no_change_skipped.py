"""No committed change is ever skipped, however long writers hold their transactions open.

Writers insert events inside transactions held open for random times (milliseconds to seconds),
some rolled back, while syncs run in a loop. An `updated_at` or id watermark would skip the rows
of a transaction that commits after a later one was read; the commit-safe change log must not.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import psycopg


def test_concurrent_writers_with_long_transactions_every_committed_event_arrives_exactly_once(
    make_account, run_sync, received, database_url
) -> None:
    make_account("acct-1", customers=5)
    committed: list[str] = []
    rolled_back: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(database_url) as conn:
            for txn in range(6):
                ids = [f"w{n}-t{txn}-e{i}" for i in range(rng.randint(1, 30))]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                        "VALUES (%s, 'acct-1', %s, 'VISIT', jsonb_build_object('eid', %s::text), now())",
                        [(i, f"c{1 + rng.randrange(5)}", i) for i in ids],
                    )
                time.sleep(rng.choice([0.005, 0.05, 0.3, 1.0, 2.0]))  # hold the transaction open
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
    syncs = 0
    while any(w.is_alive() for w in writers):
        run_sync("acct-1")
        syncs += 1
    stop.set()
    for w in writers:
        w.join()
    run_sync("acct-1")  # everything has committed now: the last run sees the rest

    got = Counter(received("acct-1"))
    assert syncs >= 3, "the syncs must overlap the writers for this test to mean anything"
    assert set(got) == set(committed)
    assert all(n == 1 for n in got.values()), "an event was delivered twice"
    assert not set(got) & set(rolled_back)
