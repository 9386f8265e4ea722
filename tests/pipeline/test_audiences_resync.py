"""The manual audience resync: current members get `true` again, in chunks, through the shared
client, pacer and ledger, without touching the audiences cursor."""

from __future__ import annotations

import asyncio
import os

import psycopg
import pytest

from masivo_braze_sync.db import Database
from masivo_braze_sync.pipeline import AccountBusy, RunFailed
from masivo_braze_sync.resync import RESYNC_CONSUMER, ResyncRefused, resync_audience
from tests.pipeline.test_audiences_sync import VIP, _attrs, _audience, _join, _leave, _sql


def _resync(account_id: str = "acct-1", audience_id: str = "vip", **kwargs):
    db = Database(os.environ["MASIVO_DATABASE_URL"])
    return asyncio.run(resync_audience(db, account_id, audience_id, **kwargs))


def _cursor(db, consumer: str = "audiences"):
    with db.connection() as conn:
        row = conn.execute(
            "SELECT txid::text, log_id FROM braze_sync.cursors WHERE consumer = %s", (consumer,)
        ).fetchone()
    return row


def test_resync_sends_true_to_every_current_member_in_chunks(make_account, run_sync, emulator, db) -> None:
    make_account("acct-1", customers=12)
    _audience(db, "vip", "VIP Customers", [f"c{i}" for i in range(1, 11)])
    _audience(db, "other", "Other", ["c11"])
    run_sync("acct-1", "audiences")
    cursor = _cursor(db)
    emulator.reset()  # the workspace was restored from an old backup: the attributes are gone

    _leave(db, "vip", "c10")
    _join(db, "vip", ["c12"])  # not synced yet: the resync sends current members anyway
    _sql(db, "UPDATE customers SET deleted_at = now() WHERE id = 'c5'")
    summary = _resync(chunk_rows=3)
    assert summary.status == "ok"
    assert (summary.rows_read, summary.objects_sent, summary.skipped) == (10, 9, 1)
    assert summary.skip_reasons == {"customer deleted": 1}
    assert summary.requests == 4  # one per chunk of 3 members (c1 c12 c2 | c3 c4 c5 | c6 c7 c8 | c9)
    for i in (1, 2, 3, 4, 6, 7, 8, 9, 12):
        assert _attrs(emulator, f"c{i}") == {VIP: True}
    for cid in ("c5", "c10", "c11"):
        assert emulator.profile("acct-1", cid) is None

    assert _cursor(db) == cursor  # the audiences cursor did not move
    with db.connection() as conn:
        batches = conn.execute(
            "SELECT consumer, status FROM braze_sync.batches WHERE consumer = %s", (RESYNC_CONSUMER,)
        )
        assert batches.fetchall() == [(RESYNC_CONSUMER, "committed")]
        runs = conn.execute("SELECT consumer, status, objects_sent FROM braze_sync.run_summaries ORDER BY id DESC")
        assert runs.fetchone() == (RESYNC_CONSUMER, "ok", 9)
    # the pending changes are still the sync's to send
    pending = run_sync("acct-1", "audiences")
    assert pending.rows_read == 2
    assert _attrs(emulator, "c10") is None  # update-only null: no profile created


@pytest.mark.parametrize(
    ("account_id", "audience_id", "message"),
    [
        ("nobody", "vip", "account nobody not found"),
        ("acct-1", "nope", "audience nope not found in account acct-1"),
        ("acct-1", "gone", "audience gone of account acct-1 is deleted"),
        ("acct-off", "vip-off", "Audiences toggle is off"),
    ],
)
def test_an_unknown_account_or_audience_is_a_clear_error_and_nothing_is_sent(
    make_account, emulator, db, account_id, audience_id, message
) -> None:
    make_account("acct-1", customers=2)
    make_account("acct-off", customers=2, sync_audiences=False)
    _audience(db, "vip", "VIP Customers", ["c1"])
    _audience(db, "gone", "Gone", ["c1"])
    _audience(db, "vip-off", "VIP Customers", ["c1"], account="acct-off")
    _sql(db, "UPDATE audiences SET deleted_at = now() WHERE id = 'gone'")
    with pytest.raises(ResyncRefused, match=message):
        _resync(account_id, audience_id)
    assert emulator.stats("acct-1").requests == emulator.stats("acct-off").requests == 0
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.batches").fetchone()[0] == 0


def test_the_resync_never_runs_alongside_an_audiences_sync(make_account, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1"])
    with psycopg.connect(os.environ["MASIVO_DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('masivo_braze_sync'), hashtext('audiences/acct-1'))")
        with pytest.raises(AccountBusy, match="audiences sync is running"):
            _resync()
    assert emulator.stats("acct-1").requests == 0
    assert _resync().objects_sent == 1  # the lock is gone with the session


def test_an_interrupted_resync_is_taken_over_by_the_next_one(make_account, emulator, db) -> None:
    from masivo_braze_sync.emulator import Fault

    make_account("acct-1", customers=5, api_key="acct-1-key")
    _audience(db, "vip", "VIP Customers", [f"c{i}" for i in range(1, 6)])
    emulator.add_fault(Fault(kind="status", status=503, count=100, workspace="acct-1"))
    with pytest.raises(RunFailed) as info:
        _resync(chunk_rows=2)
    assert info.value.summary.status == "failed"
    emulator.clear_faults()
    summary = _resync(chunk_rows=2)
    assert summary.objects_sent == 5
    assert all(_attrs(emulator, f"c{i}") == {VIP: True} for i in range(1, 6))
    with db.connection() as conn:
        assert conn.execute("SELECT status, attempts FROM braze_sync.batches").fetchall() == [("committed", 2)]


def test_a_large_audience_is_streamed_in_chunks(make_account, emulator, db) -> None:
    make_account("acct-1", customers=10_000)
    _audience(db, "vip", "VIP Customers", range(1, 10_001))
    summary = _resync(chunk_rows=3_000)
    assert (summary.rows_read, summary.objects_sent) == (10_000, 10_000)
    assert summary.requests == 40 * 3 + 14  # per chunk: 3,000 / 75, then 1,000 / 75
    assert emulator.stats("acct-1").rate_limited == 0
    assert _attrs(emulator, "c10000") == {VIP: True}


def test_retry_rejected_sends_a_resync_rejected_member_through_the_audiences_sync(
    make_account, run_sync, emulator, db
) -> None:
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.requeue import list_rejected, retry_rejected

    make_account("acct-1", customers=3)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    run_sync("acct-1", "audiences")
    emulator.reset()  # a restored workspace: the resync sends the members again, Braze refuses c1
    assert _resync().objects_sent == 2
    emulator.reset()
    _sql(
        db,
        "INSERT INTO braze_sync.rejected_rows (account_id, consumer, entity_key, stage, reason) "
        f"VALUES ('acct-1', '{RESYNC_CONSUMER}', 'c1', 'braze', 'Braze refused the object')",
    )

    # the audiences sync re-reads the customer's memberships: it is the one that sends them again
    assert retry_rejected(db, ENTITIES) == {("acct-1", "audiences"): 1}
    assert list_rejected(db)[1] == 0
    summary = run_sync("acct-1", "audiences")
    assert summary.objects_sent == 1
    assert _attrs(emulator, "c1") == {VIP: True}


def test_retry_rejected_leaves_rows_it_cannot_queue_in_place(make_account, db) -> None:
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.requeue import list_rejected, retry_rejected

    make_account("acct-1", customers=1)
    _sql(
        db,
        "INSERT INTO braze_sync.rejected_rows (account_id, consumer, entity_key, stage, reason) "
        "VALUES ('acct-1', 'retired-consumer', 'c1', 'braze', 'Braze refused the object')",
    )
    assert retry_rejected(db, ENTITIES) == {}
    rows, total = list_rejected(db)
    assert (total, rows[0].entity) == (1, "retired-consumer")  # still listed, not marked retried
