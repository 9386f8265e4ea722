"""A crash between send and commit: the next run re-sends only what it cannot prove delivered."""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import httpx
import pytest

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import EVENTS
from masivo_braze_sync.pipeline import AccountRun


class Crash(BaseException):
    """Stands for the process dying: nothing catches it."""


class CrashingTransport(httpx.AsyncBaseTransport):
    """Once `survive` answers have come back, 'kills the process' at the next request."""

    def __init__(self, survive: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.left = survive

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.left <= 0:
            raise Crash
        response = await self.inner.handle_async_request(request)
        self.left -= 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _account():
    db = Database(os.environ["MASIVO_DATABASE_URL"])
    with db.connection() as conn:
        (account,) = load_accounts(conn, ["acct-1"])
    return db, account


def test_crash_after_delivery_before_commit_resends_nothing(make_account, add_events, received, run_sync, db) -> None:
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 300)
    database, account = _account()

    async def deliver_without_commit() -> None:
        async with AccountRun(database, EVENTS, account) as run:
            batch = run.next_batch()
            await run.deliver(batch, run.transform(run.validate(run.extract(batch))))
            # the process dies here: no commit

    asyncio.run(deliver_without_commit())
    assert sorted(received("acct-1")) == sorted(ids)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.cursors").fetchone()[0] == 0

    summary = run_sync("acct-1")
    assert (summary.rows_read, summary.requests, summary.possibly_duplicated) == (300, 0, 0)
    assert sorted(received("acct-1")) == sorted(ids)  # nothing sent twice
    assert run_sync("acct-1").rows_read == 0  # and the cursor has moved


def test_crash_during_delivery_resends_only_requests_in_flight_and_counts_them(
    make_account, add_events, received, run_sync, monkeypatch
) -> None:
    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BRAZE_CONCURRENCY", "4")
    get_settings.cache_clear()
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 75 * 40)
    database, account = _account()

    async def crash_midway() -> None:
        async with AccountRun(database, EVENTS, account, transport=CrashingTransport(survive=15)) as run:
            batch = run.next_batch()
            await run.deliver(batch, run.transform(run.validate(run.extract(batch))))

    with pytest.raises(Crash):
        asyncio.run(crash_midway())
    delivered_before = Counter(received("acct-1"))
    assert 0 < len(delivered_before) < len(ids)

    summary = run_sync("acct-1")
    got = Counter(received("acct-1"))
    assert set(got) == set(ids)  # nothing lost
    duplicated = sum(n - 1 for n in got.values())
    # every duplicate is inside a request the ledger reported as possibly sent twice
    assert duplicated <= summary.possibly_duplicated * 75
    # bounded by what was marked in flight: about two blocks of `concurrency` requests
    assert summary.possibly_duplicated <= 2 * 4
