"""The `masivo-braze live` process: SIGTERM leaves nothing half-committed; after kill -9 the next
process resumes the open batch exactly as a batch run would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.live.conftest import wait_for
from tests.reliability.helpers import assert_consistent

ROOT = Path(__file__).resolve().parents[2]


def _start_live(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "live", *args],
        env={**os.environ, "MASIVO_BRAZE_CONCURRENCY": "2"},  # ~1 s of sending: stopped in the middle
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _open_batches(db) -> int:
    with db.connection() as conn:
        return conn.execute("SELECT count(*) FROM braze_sync.batches WHERE status = 'open'").fetchone()[0]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_live_process_mid_stream_then_restarting_loses_nothing(
    how, db, make_account, add_events, received, emulator
):
    make_account("acct-1", customers=1, workspace={"latency_seconds": 0.05})
    proc = _start_live("--entity", "events", "--account", "acct-1")
    try:
        wait_for(lambda: _listening(db), what="the live process to listen")
        ids = add_events("acct-1", 75 * 40)  # ~40 requests at 50 ms each: still sending when stopped
        wait_for(lambda: len(received("acct-1")) > 0, what="delivery to start")
        proc.send_signal(how)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == signal.SIGTERM:
        assert proc.returncode == 0, out
        assert "live session" in out  # the summary was printed
        assert _open_batches(db) == 0, "SIGTERM left a batch half-done"
    else:
        assert _open_batches(db) == 1, "the kill did not land mid-batch: the test would prove nothing"
    # the next process takes up whatever is left (an open batch first)
    proc = _start_live("--entity", "events", "--account", "acct-1")
    try:
        wait_for(lambda: _listening(db), what="the next live process to listen")
        wait_for(lambda: set(received("acct-1")) >= set(ids), timeout=60, what="every event")
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
    got = Counter(received("acct-1"))
    extra = sum(n - 1 for n in got.values())
    with db.connection() as conn:
        flagged = conn.execute(
            "SELECT coalesce(sum(cardinality(keys)), 0) FROM braze_sync.deliveries WHERE possibly_duplicated"
        ).fetchone()[0]
    assert set(got) == set(ids)
    assert extra <= flagged, "a copy was sent that the ledger does not flag"
    if how == signal.SIGTERM:
        assert extra == 0
    assert_consistent(db, "acct-1", "events")


def _listening(db) -> bool:
    with db.connection() as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
            ).fetchone()[0]
        )
