"""Postgres sessions per batch: a run reuses a few pooled sessions instead of opening one for
every ledger block and flush (each new session is a backend fork and an authentication)."""

from __future__ import annotations

import time

import psycopg

from masivo_braze_sync.db import Database


def _sessions_opened(db: Database) -> int:
    """Sessions ever established to the test database. A backend reports its session when it
    exits, so the pool is closed first and the count read until it settles."""
    db.dispose()
    name = psycopg.conninfo.conninfo_to_dict(db.url)["dbname"]
    last, deadline = -1, time.monotonic() + 10
    # one session for the polls (a session of its own counts only once it ends)
    with psycopg.connect(db.url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            (count,) = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
            if count == last:
                break
            last = count
            time.sleep(0.5)
    return last


def test_a_run_of_many_batches_opens_a_few_sessions(make_account, add_events, run_sync, received, db, monkeypatch):
    monkeypatch.setenv("MASIVO_BATCH_ROWS", "150")
    make_account("pool", customers=1)
    ids = add_events("pool", 150 * 8)  # 8 batches of 2 requests
    before = _sessions_opened(db)
    summary = run_sync("pool")
    opened = _sessions_opened(db) - before - 1  # less the first count's own session
    assert summary.status == "ok"
    assert summary.batches >= 8
    assert set(received("pool")) == set(ids)
    # the lock's own session, the reader's, a handful pooled; 58 for these 8 batches before the pool
    assert opened <= 12, f"{opened} sessions for {summary.batches} batches"
