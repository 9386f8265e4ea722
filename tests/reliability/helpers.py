"""Read-outs of the ledger and the emulator shared by the reliability tests."""

from __future__ import annotations

from collections import Counter


def ledger_rows(db, account_id: str, consumer: str) -> list[tuple[str, list[str], bool]]:
    """(status, keys, possibly_duplicated) of every delivery row of an account and consumer."""
    with db.connection() as conn:
        return conn.execute(
            "SELECT status, keys, possibly_duplicated FROM braze_sync.deliveries "
            "WHERE account_id = %s AND consumer = %s ORDER BY id",
            (account_id, consumer),
        ).fetchall()


def assert_consistent(db, account_id: str, consumer: str, captured: tuple[str, ...] | None = None) -> None:
    """The ledger after a finished sync: no open batch, no request of a committed batch without a
    final answer (`unknown` = superseded by a resumed attempt), the cursor at the last batch's end
    and no change left after it."""
    with db.connection() as conn:
        open_batches = conn.execute(
            "SELECT count(*) FROM braze_sync.batches WHERE account_id = %s AND consumer = %s AND status = 'open'",
            (account_id, consumer),
        ).fetchone()[0]
        unanswered = conn.execute(
            "SELECT count(*) FROM braze_sync.deliveries d JOIN braze_sync.batches b ON b.id = d.batch_id "
            "WHERE d.account_id = %s AND d.consumer = %s AND d.status IN ('pending', 'sending')",
            (account_id, consumer),
        ).fetchone()[0]
        last_batch_end = conn.execute(
            "SELECT to_txid::text, to_id FROM braze_sync.batches WHERE account_id = %s AND consumer = %s "
            "ORDER BY id DESC LIMIT 1",
            (account_id, consumer),
        ).fetchone()
        cursor = conn.execute(
            "SELECT txid::text, log_id FROM braze_sync.cursors WHERE account_id = %s AND consumer = %s",
            (account_id, consumer),
        ).fetchone()
        left = conn.execute(
            "SELECT count(*) FROM braze_sync.change_log l, braze_sync.cursors c "
            "WHERE c.account_id = %s AND c.consumer = %s AND l.account_id = c.account_id "
            "AND l.entity = ANY(%s) AND (l.txid, l.id) > (c.txid, c.log_id)",
            (account_id, consumer, list(captured or (consumer,))),
        ).fetchone()[0]
    assert open_batches == 0
    assert unanswered == 0, f"{unanswered} requests of committed batches never got a final answer"
    assert cursor is not None
    assert last_batch_end is not None
    assert tuple(cursor) == tuple(last_batch_end)
    assert left == 0, f"{left} changes after the cursor"


def duplicated(ids: list[str]) -> Counter:
    """Extra copies per id (only ids received more than once)."""
    return Counter({i: n - 1 for i, n in Counter(ids).items() if n > 1})


def backlog(db, account_id: str, consumer: str, captured: tuple[str, ...] | None = None) -> int:
    """Changes of the account not yet behind the consumer's cursor."""
    with db.connection() as conn:
        return conn.execute(
            "SELECT count(*) FROM braze_sync.change_log l "
            "LEFT JOIN braze_sync.cursors c ON c.account_id = l.account_id AND c.consumer = %s "
            "WHERE l.account_id = %s AND l.entity = ANY(%s) "
            "AND (c.txid IS NULL OR (l.txid, l.id) > (c.txid, c.log_id))",
            (consumer, account_id, list(captured or (consumer,))),
        ).fetchone()[0]


def sync_caught_up(run_sync, db, account_id: str, entity: str, *, timeout: float = 30.0) -> list:
    """Run until the backlog is empty; the summaries of every run.

    A sync reads only changes below the oldest open transaction of the whole Postgres cluster
    (README, "No change is ever skipped"), so on a server shared with other work one run may
    stop short of a change committed a moment ago; the next one takes it.
    """
    import time

    from masivo_braze_sync.entities import ENTITIES

    captured = ENTITIES[entity].captured
    deadline = time.monotonic() + timeout
    summaries = [run_sync(account_id, entity)]
    while backlog(db, account_id, entity, captured):
        assert time.monotonic() < deadline, f"{entity} of {account_id}: the backlog never emptied"
        time.sleep(0.1)
        summaries.append(run_sync(account_id, entity))
    return summaries
