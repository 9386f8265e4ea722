"""Postgres restarts in the middle of a run: the run fails cleanly (or rides it out), the next run
completes, and the cursor and the ledger stay consistent.

The restart hits a throwaway Postgres (`pgserver` in a temporary folder, restarted with its own
`pg_ctl -m fast`, which ends every session: tests/throwaway_pg.py), never the server the rest of
the suite uses.
"""

from __future__ import annotations

import threading
import time

import pytest

from masivo_braze_sync.db import Database
from masivo_braze_sync.db.engine import ConnectRetry
from masivo_braze_sync.db.migrate import init_database
from masivo_braze_sync.emulator import Workspace
from masivo_braze_sync.errors import ConfigurationError, DatabaseUnavailable, RetryableError, SyncError
from tests.reliability.helpers import assert_consistent, duplicated, ledger_rows
from tests.throwaway_pg import restart, start, stop

pytestmark = pytest.mark.slow


def _add_events(db: Database, first: int, n: int) -> list[str]:
    ids = [f"e{i}" for i in range(first, first + n)]
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
            "SELECT i, 'pg', 'c1', 'VISIT', jsonb_build_object('eid', i), now() FROM unnest(%s::text[]) AS i",
            (ids,),
        )
    return ids


def test_postgres_restart_during_delivery_then_the_next_run_completes(
    throwaway_pg, emulator, emulator_url, received, run_sync, monkeypatch, settings_env
) -> None:
    url = throwaway_pg.get_uri()
    db = Database(url)
    init_database(db, source=True)
    monkeypatch.setenv("MASIVO_DATABASE_URL", url)
    settings_env(BRAZE_CONCURRENCY=2)
    emulator.add_workspace(Workspace(name="pg", api_key="pg-key", latency_seconds=0.05))
    with db.connection() as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES ('pg', 'pg')")
        conn.execute(
            "INSERT INTO braze_integrations (account_id, api_key, rest_endpoint) VALUES ('pg', 'pg-key', %s)",
            (emulator_url,),
        )
        conn.execute("INSERT INTO customers (account_id, id) VALUES ('pg', 'c1')")
    ids = _add_events(db, 0, 75 * 80)  # 80 requests, ~40 per second: about 2 s of delivery

    restarted = threading.Event()

    def restart_mid_delivery() -> None:
        deadline = time.monotonic() + 60
        while emulator.stats("pg").requests < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        restart(throwaway_pg)
        restarted.set()

    restarter = threading.Thread(target=restart_mid_delivery, daemon=True)
    restarter.start()
    started = time.monotonic()
    try:
        first = run_sync("pg")
    except SyncError as exc:  # the clean failure: ours, naming the account or the database
        first = exc
    except Exception as exc:  # a driver's error escaping is acceptable, a hang is not
        first = exc
    restarter.join(60)
    assert restarted.is_set()
    assert time.monotonic() - started < 60  # failed (or finished), never hung
    assert isinstance(first, Exception) or first.status == "ok"

    # more changes arrive; the next run resumes what is open and sends them too
    ids += _add_events(db, len(ids), 75 * 4)
    summary = run_sync("pg")
    assert summary.status == "ok"
    assert run_sync("pg").rows_read == 0

    got = received("pg")
    assert set(got) == set(ids)
    flagged = {k for _, keys, dup in ledger_rows(db, "pg", "events") if dup for k in keys}
    assert set(duplicated(got)) <= flagged
    assert_consistent(db, "pg", "events")
    db.dispose()


def test_a_ledger_write_lost_to_a_database_blip_is_written_later(
    make_account, add_events, run_sync, received, db, settings_env, monkeypatch
) -> None:
    """Answers are written to the ledger in groups every FLUSH_SECONDS; when one such write fails
    (the database restarting under it) and the database is back for the next one, the run goes
    on, and the answers of the failed write must not be lost: a request left `sending` in a
    committed batch would count as never delivered (`sync --full` would send its events again)."""
    import psycopg

    from masivo_braze_sync.ledger import Ledger

    settings_env(BRAZE_CONCURRENCY=2)
    make_account("blip", customers=1, workspace={"latency_seconds": 0.05})
    ids = add_events("blip", 75 * 24)  # ~0.6 s of delivery: several flushes
    original = Ledger.record_outcomes
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise psycopg.OperationalError("the database system is shutting down")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "record_outcomes", flaky)
    try:
        run_sync("blip")
    except Exception:  # failing is fine too: the next run resumes the batch
        assert run_sync("blip").status == "ok"
    assert calls["n"] >= 2
    assert set(received("blip")) == set(ids)
    assert_consistent(db, "blip", "events")


# -- reaching Postgres: an outage is transient, a refused login is configuration ----------------------


def test_a_connection_rides_out_a_postgres_restart(throwaway_pg) -> None:
    url = throwaway_pg.get_uri()
    stop(throwaway_pg)
    back = threading.Timer(1.0, start, (throwaway_pg, url))  # down for about a second
    back.start()
    try:
        with Database(url).connection() as conn:  # the default retry waits 15 to 20 s in all
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        back.join(60)


def test_postgres_down_for_good_is_reported_as_transient_not_as_configuration() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql://postgres@127.0.0.1:{port}/postgres", ConnectRetry(attempts=3, first_wait=0.01))
    with (
        pytest.raises(DatabaseUnavailable, match="did not accept a connection in 3 attempts") as caught,
        db.connection(),
    ):
        pass
    assert isinstance(caught.value, RetryableError)
    assert not isinstance(caught.value, ConfigurationError)
    assert "\n" not in str(caught.value)  # one line for the operator


def test_a_refused_login_is_a_configuration_error_and_is_not_retried(database_url) -> None:
    from urllib.parse import urlsplit, urlunsplit

    url = urlunsplit(urlsplit(database_url)._replace(path="/no_such_database_here"))
    db = Database(url, ConnectRetry(attempts=3, first_wait=30))  # a retry would wait 30 s
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match='database "no_such_database_here" does not exist'), db.connection():
        pass
    assert time.monotonic() - started < 10
