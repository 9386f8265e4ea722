"""Live mode through faults: a Postgres restart while writers keep committing, and a Braze storm on
one account while the others keep delivering (docs/live.md#faults)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psycopg
import pytest

from masivo_braze_sync.db import Database
from masivo_braze_sync.db.migrate import init_database
from masivo_braze_sync.emulator import Fault, Workspace
from masivo_braze_sync.settings import Settings, get_settings
from tests.live.conftest import LiveThread, wait_for
from tests.reliability.helpers import assert_consistent
from tests.throwaway_pg import restart

#: no sweep timer to the rescue: what arrives, arrives through wake-ups and the reconnect's sweep
NO_SWEEP = 600.0


def _flagged(db: Database) -> set[str]:
    """Event ids in requests the ledger marks as possibly sent twice (their answer was lost)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT keys FROM braze_sync.deliveries WHERE consumer = 'events' AND possibly_duplicated"
        ).fetchall()
    return {k for (keys,) in rows for k in keys}


class Writers:
    """Threads committing small event transactions until stopped, reconnecting when Postgres goes.

    A commit that raised may or may not have happened; the database says which afterwards."""

    def __init__(self, url: str, account_id: str, n: int = 3) -> None:
        self.url, self.account_id = url, account_id
        self.confirmed: list[tuple[float, str]] = []  # (monotonic time of the commit's return, id)
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(w,), daemon=True) for w in range(n)]

    def __enter__(self) -> Writers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _write(self, w: int) -> None:
        txn = 0
        conn = None
        while not self._stop.is_set():
            ids = [f"w{w}-t{txn}-e{i}" for i in range(1 + txn % 4)]
            txn += 1
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url)
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                        "VALUES (%s, %s, 'c1', 'VISIT', jsonb_build_object('eid', %s::text), now())",
                        [(i, self.account_id, i) for i in ids],
                    )
                conn.commit()
                with self._lock:
                    self.confirmed += [(time.monotonic(), i) for i in ids]
            except psycopg.OperationalError:  # the server went away: reconnect and go on
                with self._lock:
                    self.failures += 1
                conn = None
                time.sleep(0.05)
            time.sleep(0.01)
        if conn is not None:
            conn.close()


def _commit_events(url: str, account_id: str, n: int) -> list[str]:
    ids = [f"later-e{i}" for i in range(n)]
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
            "SELECT i, %s, 'c1', 'VISIT', jsonb_build_object('eid', i), now() FROM unnest(%s::text[]) AS i",
            (account_id, ids),
        )
    return ids


def _committed(db: Database, account_id: str) -> set[str]:
    with db.connection() as conn:
        return {i for (i,) in conn.execute("SELECT id FROM events WHERE account_id = %s", (account_id,))}


def test_postgres_restart_mid_stream_every_committed_event_arrives_once_and_later_ones_without_a_sweep(
    throwaway_pg, emulator, emulator_url, received, monkeypatch
) -> None:
    url = throwaway_pg.get_uri()
    db = Database(url)
    init_database(db, source=True)
    monkeypatch.setenv("MASIVO_DATABASE_URL", url)
    get_settings.cache_clear()
    emulator.add_workspace(Workspace(name="pg", api_key="pg-key", latency_seconds=0.02))
    with db.connection() as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES ('pg', 'pg')")
        conn.execute(
            "INSERT INTO braze_integrations (account_id, api_key, rest_endpoint) VALUES ('pg', 'pg-key', %s)",
            (emulator_url,),
        )
        conn.execute("INSERT INTO customers (account_id, id) VALUES ('pg', 'c1')")

    live = LiveThread(settings=Settings(live_sweep_seconds=NO_SWEEP)).start()
    try:
        with Writers(url, "pg") as writers:
            wait_for(lambda: len(received("pg")) >= 30, what="live delivery to start")
            restart(throwaway_pg)  # every session ends: the listener's, the workers' and the writers'
            restarted_at = time.monotonic()
            wait_for(
                lambda: sum(t > restarted_at + 0.5 for t, _ in writers.confirmed) >= 30,
                what="the writers to commit again after the restart",
            )
        assert writers.failures >= 1, "the restart did not interrupt the writers: it proved nothing"
        after_restart = {i for t, i in writers.confirmed if t > restarted_at}
        committed = _committed(db, "pg")
        assert {i for _, i in writers.confirmed} <= committed
        # the sweep timer never fired: what arrives came through the reconnect, its sweep and wake-ups
        wait_for(lambda: set(received("pg")) >= committed, timeout=60, what="every committed event")
        # the workers are idle again: a change now arrives only if a wake-up brings it
        worker = live.session.workers["pg"]
        wait_for(lambda: not any(c.name in worker.pending for c in worker.consumers), what="the worker to go idle")
        later = _commit_events(url, "pg", 5)
        wait_for(lambda: set(received("pg")) >= set(later), timeout=60, what="an event committed after it all")
        committed |= set(later)
        time.sleep(0.3)  # anything sent twice would show up now
        assert live.session.listener.reconnects >= 1
        assert live.session.sweeps >= 2  # the first LISTEN's and the reconnect's, not the timer's
    finally:
        live.stop()
    got = Counter(received("pg"))
    assert after_restart
    assert after_restart <= set(got)
    assert set(got) == committed
    doubled = {i for i, n in got.items() if n > 1}
    # a request whose answer could not be recorded (the database went away) is flagged in the ledger
    assert doubled <= _flagged(db), "an event arrived twice that the ledger does not flag"
    assert_consistent(db, "pg", "events")
    db.dispose()


@pytest.mark.parametrize("storm", [Fault("status", status=503, probability=1.0), Fault("rate_limit", probability=1.0)])
def test_a_braze_storm_on_one_account_leaves_the_others_delivering_and_it_catches_up_after(
    storm, make_account, add_events, received, emulator, live
) -> None:
    for account_id in ("storm", "calm-1", "calm-2"):
        make_account(account_id, customers=1)
    session = live(settings=Settings(live_failure_backoff_max_seconds=2.0))
    wait_for(lambda: all(emulator.profiles(a) for a in ("storm", "calm-1", "calm-2")), what="the first profiles")
    storm.workspace = "storm"
    emulator.add_fault(storm)  # every request of that workspace fails until the storm ends
    stormed = add_events("storm", 40)
    calm: set[str] = set()

    def calm_arrived() -> bool:
        return set(received("calm-1") + received("calm-2")) >= calm

    for _ in range(5):  # the other accounts get their data while the storm lasts
        calm |= set(add_events("calm-1", 10) + add_events("calm-2", 10))
        wait_for(calm_arrived, what="the calm accounts' events during the storm")
    wait_for(lambda: _failures(session, "storm") >= 1, what="the storm to hit")
    assert emulator.stats("storm").faults_injected, "the storm did not hit: the test would prove nothing"
    assert received("storm") == []
    emulator.clear_faults()
    wait_for(lambda: set(received("storm")) >= set(stormed), what="the stormed account to catch up")
    time.sleep(0.3)
    for account_id, ids in (("storm", stormed), ("calm-1", None), ("calm-2", None)):
        got = Counter(received(account_id))
        if ids is not None:
            assert set(got) == set(ids)
        assert all(n == 1 for n in got.values()), f"an event of {account_id} arrived twice"
    assert set(received("calm-1") + received("calm-2")) == calm


def _failures(live: LiveThread, account_id: str) -> int:
    return sum(t.failures for (a, _), t in list(live.session.totals.items()) if a == account_id)
