"""Load and isolation: 20 accounts in one run, one with a revoked key (401) and one whose Braze
answers 10% of requests with a 503. Every healthy account delivers fully, and none takes more than
1.2x the time the same work takes alone.

Making the 1.2x comparison meaningful on a 2-core machine:
- Every account does the same work (60 requests of 5 events) and is paced by its own workspace
  limit (50 requests per 10 s, ~5 requests/s), set in `braze_integrations` as an operator would.
  An account's time (`AccountSummary.seconds`, from taking its lock to releasing it) is then
  dominated by its own pacing (~12 s), not by CPU; isolation means a neighbour's failures, retries
  or volume must not eat into an account's budget or stall the event loop they share. What the
  crowd does cost is start-up: 20 accounts open their Postgres sessions at once (1-1.5 s on 2
  cores, depending on the host), which is why the paced part is kept well above 5x that. The crowd's 100 requests/s
  (client, ledger and the in-process emulator on one GIL) stay well below what one slow core
  serves: at 10 requests/s per account (200/s) a host with a slow core missed the bound by the
  CPU alone (10.3 s vs 10.2 s), not by any lack of isolation.
- "Alone" is the mean of two healthy accounts each run alone, so one slow start does not set the
  bar; in the crowd, every healthy account's time is compared to it.
- The 20 accounts run the way `flows/common.py` runs them, minus Prefect: one event loop, one
  `AccountRun` per account, database and polars stages in worker threads, delivery on the loop.
  Prefect's own cost per task run depends on its server (docs/prefect.md#task-run-overhead) and would measure that
  server, not the pipeline; flow-level isolation (one account's 401 fails that run only) is
  covered in tests/flows/test_events_flow.py and tests/reliability/test_secrets.py.
"""

from __future__ import annotations

import asyncio
import statistics

import pytest

from masivo_braze_sync.emulator import Fault
from masivo_braze_sync.errors import SyncError

pytestmark = pytest.mark.slow

HEALTHY = [f"load-{i:02d}" for i in range(18)]
ALONE = HEALTHY[:2]
REVOKED, FLAKY = "load-revoked", "load-flaky"
PER_REQUEST = 5  # small requests: CPU per account stays small next to its pacing
REQUESTS = 60  # ~12 s of pacing at ~5 requests/s
EVENTS = PER_REQUEST * REQUESTS
PACE = {"track_rate_limit": 50, "track_rate_window_seconds": 10.0}


def _add_events(db, account: str, first: int) -> None:
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
            "SELECT %(a)s || '-e' || g, %(a)s, 'c1', 'VISIT', jsonb_build_object('eid', %(a)s || '-e' || g), now() "
            "FROM generate_series(%(first)s::int, %(last)s::int) g",
            {"a": account, "first": first, "last": first + EVENTS - 1},
        )


async def _run_accounts(account_ids: list[str]) -> dict[str, object]:
    """One run over several accounts, staged like `flows/common.sync_account` (without Prefect)."""
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import EVENTS as SPEC
    from masivo_braze_sync.pipeline import AccountRun

    db = Database.from_settings()
    with db.connection() as conn:
        accounts = load_accounts(conn, account_ids)

    async def one(account):
        run = AccountRun(db, SPEC, account)
        try:
            async with run:
                while (batch := await asyncio.to_thread(run.next_batch)) is not None:
                    frame = await asyncio.to_thread(run.extract, batch)
                    objects = await asyncio.to_thread(lambda f=frame: run.transform(run.validate(f)))
                    await run.deliver(batch, objects)
                    await asyncio.to_thread(run.commit, batch)
        except SyncError:
            pass  # recorded in the summary, like the flow does
        return run.summary

    return {s.account_id: s for s in await asyncio.gather(*(one(a) for a in accounts))}


def test_twenty_accounts_a_revoked_key_and_a_flaky_workspace_leave_healthy_accounts_whole(
    make_account, emulator, received, db, settings_env
) -> None:
    settings_env(OBJECTS_PER_REQUEST=PER_REQUEST)
    for account in [*HEALTHY, REVOKED, FLAKY]:
        make_account(account, customers=1, api_key="revoked" if account == REVOKED else None, **PACE)
        _add_events(db, account, 1)

    alone = []
    for account in ALONE:
        summary = asyncio.run(_run_accounts([account]))[account]
        assert summary.objects_sent == EVENTS
        alone.append(summary.seconds)
        _add_events(db, account, EVENTS + 1)  # the same work again, for the crowd
    bar = 1.2 * statistics.median(alone)

    emulator.add_fault(Fault("status", status=503, probability=0.1, workspace=FLAKY))
    crowd = asyncio.run(_run_accounts([*HEALTHY, REVOKED, FLAKY]))
    assert len(crowd) == 20
    assert crowd[REVOKED].status == "failed"
    assert "401" in crowd[REVOKED].error
    assert emulator.profiles(REVOKED) == {}

    for account in HEALTHY:
        s = crowd[account]
        assert (s.status, s.objects_sent, s.rejected) == ("ok", EVENTS, 0), s.error
        total = 2 * EVENTS if account in ALONE else EVENTS
        assert len(set(received(account))) == total
    flaky = crowd[FLAKY]
    assert (flaky.status, flaky.objects_sent) == ("ok", EVENTS)  # retried through the 503s
    assert flaky.retries > 0
    assert len(set(received(FLAKY))) == EVENTS

    times = {a: crowd[a].seconds for a in HEALTHY}
    slow = {a: t for a, t in times.items() if t > bar}
    assert not slow, f"alone: {alone}, bar {bar:.2f} s; slower in the crowd: {slow}"
