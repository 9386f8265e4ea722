"""Two processes, each one partition of one account's events, against a rate-limited workspace:
together they stay under its limit (the Prefect global limit they share), and every event goes
once (docs/operations.md#partitions)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from masivo_braze_sync import partitions
from masivo_braze_sync.entities import EVENTS
from tests.capture_helpers import settle

ROOT = Path(__file__).resolve().parents[2]
LIMIT, WINDOW = 30, 3.0  # requests per window: two processes pacing alone would send twice this


def test_two_partition_processes_share_the_workspace_budget_and_send_each_event_once(
    run_env, db, make_account, add_events, emulator, received
) -> None:
    make_account(
        "acct-1",
        customers=16,
        workspace={"rate_limit": LIMIT, "rate_window_seconds": WINDOW},
        track_rate_limit=LIMIT,
        track_rate_window_seconds=WINDOW,
    )
    partitions.change_count(db, "events", EVENTS.captured, "acct-1", 2)
    ids = [e for c in range(1, 17) for e in add_events("acct-1", 600, customer=f"c{c}")]  # 128 requests
    settle(db, "acct-1")

    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "sync", "events", "--account", "acct-1", "--partition", str(p)],
            env=run_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out

    got = Counter(received("acct-1"))
    assert set(got) == set(ids)
    assert max(got.values()) == 1
    stats = emulator.stats("acct-1")
    assert stats.rate_limited == 0, "together the two partitions went over the workspace's limit"
    assert stats.max_in_window <= LIMIT
    with db.connection() as conn:
        consumers = {c for (c,) in conn.execute("SELECT DISTINCT consumer FROM braze_sync.batches").fetchall()}
    assert consumers == {"events#0of2", "events#1of2"}
