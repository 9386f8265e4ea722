"""kill -9 of a real sync process during delivery, then a normal run: nothing is lost, and the
delivery ledger says how many requests were possibly sent twice, no more than were in flight.

tests/pipeline/test_crash_recovery.py simulates the crash inside the process (an exception nothing
catches, so `finally` blocks still run); here the process really dies: no `finally`, no flush of
answers already received, no goodbye to Postgres.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from masivo_braze_sync.deliver import FLUSH_SECONDS
from masivo_braze_sync.pipeline import AccountBusy
from tests.reliability.helpers import assert_consistent, duplicated, ledger_rows

pytestmark = pytest.mark.slow

CONCURRENCY = 4
LATENCY = 0.05  # seconds per request at the emulator: ~80 requests/s at 4 in flight
REQUESTS = 120

# the sync process: one account's events through the core pipeline (Prefect adds nothing here
# and would cost ~10 s of start-up)
SCRIPT = """
import asyncio, os, sys
from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.pipeline import AccountRun

db = Database(os.environ["MASIVO_DATABASE_URL"])
with db.connection() as conn:
    (account,) = load_accounts(conn, [sys.argv[1]])

async def main():
    async with AccountRun(db, ENTITIES["events"], account) as run:
        await run.run()

asyncio.run(main())
print("finished")
"""


def _run_when_free(run_sync, account_id: str):
    """The dead process's Postgres session (and its lock) goes away a moment after the kill."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return run_sync(account_id)
        except AccountBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_kill_9_during_delivery_loses_nothing_and_counts_the_requests_in_flight(
    make_account, add_events, run_sync, emulator, received, db, settings_env
) -> None:
    settings_env(BRAZE_CONCURRENCY=CONCURRENCY)
    make_account("acct-1", customers=1, workspace={"latency_seconds": LATENCY})
    ids = add_events("acct-1", 75 * REQUESTS)

    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "acct-1"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while emulator.stats("acct-1").requests < REQUESTS // 3:  # well into delivery
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sync process never got going"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    before = received("acct-1")
    assert 0 < len(set(before)) < len(ids)  # killed half-way
    in_flight = [keys for status, keys, _ in ledger_rows(db, "acct-1", "events") if status == "sending"]
    assert in_flight, "the ledger shows no request in flight at the kill"
    in_flight_keys = {k for keys in in_flight for k in keys}
    # in flight = the requests marked `sending` a block at a time (at most 2.5 blocks ahead of
    # the answers) plus answers received but not yet flushed to the ledger (FLUSH_SECONDS)
    window = int(2.5 * CONCURRENCY + FLUSH_SECONDS * CONCURRENCY / LATENCY) + CONCURRENCY
    assert len(in_flight) <= window

    summary = _run_when_free(run_sync, "acct-1")
    got = received("acct-1")
    assert set(got) == set(ids)  # nothing lost
    extra = duplicated(got)
    assert set(extra) <= in_flight_keys  # only what was in flight may have gone twice
    assert all(n == 1 for n in extra.values())
    # the resumed run counts every request it re-sent for keys in flight, and no other
    assert summary.possibly_duplicated == len(in_flight)
    assert len(extra) <= 75 * summary.possibly_duplicated
    flagged = [keys for _, keys, dup in ledger_rows(db, "acct-1", "events") if dup]
    assert len(flagged) == summary.possibly_duplicated
    assert {k for keys in flagged for k in keys} == in_flight_keys

    assert run_sync("acct-1").rows_read == 0
    assert_consistent(db, "acct-1", "events")
