"""A 401 is not a possible duplicate: a request Braze refused for its key, or one never sent
because the account stopped first, was not applied, and the retry says so (issue 14, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.errors import AuthenticationError
from masivo_braze_sync.pipeline import AccountRun
from tests.capture_helpers import settle


def _run(db, account_id: str) -> AccountRun:
    with db.connection() as conn:
        (account,) = load_accounts(conn, [account_id])
    run = AccountRun(db, ENTITIES["events"], account)

    async def go() -> None:
        async with run:
            await run.run()

    with contextlib.suppress(AuthenticationError):
        asyncio.run(go())
    return run


def test_after_a_401_the_retries_and_the_fixed_run_report_no_possible_duplicates(
    db, make_account, add_events, received, monkeypatch
) -> None:
    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BRAZE_CONCURRENCY", "4")  # some requests wait behind the first answers
    get_settings.cache_clear()
    make_account("acct-1", customers=1, api_key="key-of-no-workspace")  # ("<account>-key" is a workspace's)
    ids = add_events("acct-1", 40 * 75)
    settle(db, "acct-1")  # other sessions on the server may hold the horizon back a moment

    for _ in range(3):  # the scheduler retries every minute while the key is wrong
        failed = _run(db, "acct-1")
        assert failed.summary.status == "failed", failed.summary
        assert "401" in (failed.summary.error or "")
        assert failed.summary.possibly_duplicated == 0
    with db.connection() as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM braze_sync.deliveries GROUP BY 1").fetchall())
    assert "unknown" not in statuses, statuses
    assert "sending" not in statuses, statuses
    assert statuses.get("refused", 0) >= 3  # one refused request per attempt, recorded as such

    with db.connection() as conn:
        conn.execute("UPDATE braze_integrations SET api_key = 'acct-1-key' WHERE account_id = 'acct-1'")
    fixed = _run(db, "acct-1")
    assert (fixed.summary.status, fixed.summary.possibly_duplicated) == ("ok", 0)
    assert Counter(received("acct-1")) == Counter(ids)


@pytest.mark.parametrize("status", ["refused", "unsent"])
def test_the_ledger_accepts_the_not_applied_statuses(db, status: str) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO braze_sync.batches (consumer, account_id, from_txid, from_id, to_txid, to_id, log_rows) "
            "VALUES ('events', 'a', '1', 0, '2', 1, 1)"
        )
        conn.execute(
            "INSERT INTO braze_sync.deliveries (batch_id, account_id, consumer, seq, endpoint, keys, status) "
            "VALUES (1, 'a', 'events', 0, 'track', ARRAY['k'], %s)",
            (status,),
        )


def test_a_401_after_an_attempt_that_may_have_landed_counts_as_a_possible_duplicate(
    db, make_account, add_events, received, emulator, monkeypatch
) -> None:
    from masivo_braze_sync.emulator import Fault
    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BRAZE_CONCURRENCY", "1")  # one request at a time: the faults hit the first
    get_settings.cache_clear()
    make_account("acct-1", customers=1)
    ids = add_events("acct-1", 75)
    settle(db, "acct-1")
    # the first attempt lands but its answer is a 500; the retry is refused for the key
    emulator.add_fault(Fault(kind="applied_then_500", count=1, workspace="acct-1"))
    emulator.add_fault(Fault(kind="status", status=401, count=1, workspace="acct-1"))
    failed = _run(db, "acct-1")
    assert failed.summary.status == "failed"
    assert Counter(received("acct-1")) == Counter(ids)  # the first attempt was applied

    emulator.clear_faults()
    fixed = _run(db, "acct-1")
    assert (fixed.summary.status, fixed.summary.possibly_duplicated) == ("ok", 1)  # counted, not hidden
