"""Batches end at whole requests: a backlog costs the minimum number of requests (issue 7).

Every batch but the log's last would otherwise end with a partly filled request. The rows after
the last whole request go to the next batch: each event is still sent exactly once, each skip and
reject is counted once, and the ranges the batches took are contiguous.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest

from tests.batch_helpers import min_requests


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BATCH_ROWS", "200")
    get_settings.cache_clear()
    return 200


def _mixed_backlog(db) -> tuple[list[str], Counter, list[str]]:
    """1,000 events for c1 with internal (skipped) and unknown-customer (rejected) ones interleaved."""
    from psycopg.types.json import Jsonb

    rows, sent, skips, rejected = [], [], Counter(), []
    for i in range(1000):
        eid, kind, customer = f"acct-1-e{i}", "VISIT", "c1"
        if i % 7 == 3:
            kind = "REDEEM_COUPON"
            skips["internal event"] += 1
        elif i % 11 == 5:
            customer = "nobody"
            rejected.append(eid)
        else:
            sent.append(eid)
        rows.append((eid, "acct-1", customer, kind, Jsonb({"eid": eid})))
    with db.connection() as conn, conn.cursor() as cur:
        # one statement per event: each is its own change, in order
        cur.executemany(
            "INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at) "
            "VALUES (%s, %s, %s, %s, %s, now())",
            rows,
        )
    return sent, skips, rejected


def _batches(db) -> list[tuple]:
    with db.connection() as conn:
        return conn.execute(
            "SELECT from_txid::text, from_id, to_txid::text, to_id, log_rows, status FROM braze_sync.batches "
            "WHERE consumer = 'events' ORDER BY id"
        ).fetchall()


def test_a_backlog_is_sent_in_the_fewest_requests_each_event_once(
    small_batches, make_account, run_sync, received, emulator, db
) -> None:
    make_account("acct-1", customers=1)
    sent, skips, rejected = _mixed_backlog(db)
    assert len(sent) % 75  # the case that used to cost a request per batch
    assert len(sent) > 4 * 75

    summary = run_sync("acct-1")

    assert Counter(received("acct-1")) == Counter(sent)  # every event once
    assert summary.requests == emulator.stats("acct-1").requests == min_requests(len(sent))
    assert (summary.rows_read, summary.objects_sent) == (1000, len(sent))
    assert summary.skip_reasons == dict(skips)
    assert summary.rejected == len(rejected)
    with db.connection() as conn:
        recorded = conn.execute("SELECT entity_key FROM braze_sync.rejected_rows").fetchall()
    assert sorted(k for (k,) in recorded) == sorted(rejected)  # each once, in the batch that read it

    batches = _batches(db)
    assert len(batches) > 5  # 1,000 log rows in batches of at most 200: some ended early
    assert any(rows < small_batches for *_, rows, _ in batches[:-1])
    assert sum(rows for *_, rows, _ in batches) == 1000
    for before, after in itertools.pairwise(batches):
        assert (after[0], after[1]) == (before[2], before[3])  # contiguous: nothing skipped over
    assert {status for *_, status in batches} == {"committed"}
    assert run_sync("acct-1").rows_read == 0


def test_the_log_end_is_not_held_back(small_batches, make_account, add_events, run_sync, received) -> None:
    # a short last range is the end of the log: its partly filled request goes now
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 130)
    summary = run_sync("acct-1")
    assert sorted(received("acct-1")) == sorted(ids)
    assert summary.requests == 2


def test_a_dry_run_ends_its_batches_the_same_way(small_batches, make_account, add_events, run_sync, emulator) -> None:
    make_account("acct-1", customers=1)
    add_events("acct-1", 700)
    bodies: list[bytes] = []
    summary = run_sync("acct-1", dry_run=True, printer=bodies.append)
    assert summary.requests == len(bodies) == min_requests(700)
    assert summary.rows_read == 700
    assert emulator.stats("acct-1").requests == 0


def test_a_crash_after_a_batch_was_ended_early_resumes_that_range(
    small_batches, make_account, add_events, run_sync, received, db
) -> None:
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.pipeline import AccountRun

    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 180)
    add_events("acct-1", 20, type="EXPIRE")  # skipped rows after the last whole request
    ids += add_events("acct-1", 300)

    async def fit_then_crash() -> None:
        with db.connection() as conn:
            (account,) = load_accounts(conn, ["acct-1"])
        async with AccountRun(db, ENTITIES["events"], account) as run:
            batch = run.next_batch()
            fitted, objects = run.fit(batch, run.transform(run.validate(run.extract(batch))))
            assert (fitted.range.rows, objects.height) == (150, 150)
            # the process dies here: nothing sent, the batch stays open with its shortened range

    asyncio.run(fit_then_crash())
    assert _batches(db)[0][4:] == (150, "open")

    summary = run_sync("acct-1")
    assert Counter(received("acct-1")) == Counter(ids)
    assert summary.requests == min_requests(len(ids))
    assert summary.skip_reasons == {"internal event": 20}
