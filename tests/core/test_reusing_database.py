"""Reused connections keep `Database.connection()`'s semantics, and a dead one is not handed out twice."""

from __future__ import annotations

import psycopg
import pytest

from masivo_braze_sync.db.reuse import ReusingDatabase


def _pid(conn) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_a_connection_is_reused_and_commits_and_rolls_back_like_a_new_one(db) -> None:
    reusing = ReusingDatabase.of(db)
    with reusing.connection() as conn:
        first = _pid(conn)
        conn.execute("INSERT INTO accounts (id, name) VALUES ('r1', 'r1')")

    def fail_in_a_transaction() -> None:
        with reusing.connection() as conn:
            conn.execute("INSERT INTO accounts (id, name) VALUES ('r2', 'r2')")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_in_a_transaction()
    with reusing.connection(autocommit=True) as conn:
        assert _pid(conn) == first  # the same session, back in autocommit
        assert [r for (r,) in conn.execute("SELECT id FROM accounts WHERE id LIKE 'r%' ORDER BY id")] == ["r1"]
    reusing.dispose()


def test_after_its_sessions_are_ended_the_next_connection_works(db) -> None:
    reusing = ReusingDatabase.of(db)
    with reusing.connection() as a, reusing.connection() as b:  # two idle ones afterwards
        pids = [_pid(a), _pid(b)]
    with db.connection() as conn:  # as a server restart would
        conn.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p", (pids,))
    with pytest.raises(psycopg.OperationalError), reusing.connection() as conn:
        conn.execute("SELECT 1")
    with reusing.connection() as conn:  # the other dead one was dropped too
        assert conn.execute("SELECT 1").fetchone() == (1,)
    reusing.dispose()
