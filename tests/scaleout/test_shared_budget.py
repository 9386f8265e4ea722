"""Two processes syncing one Braze workspace at once stay under its limit together.

Each process paces itself to the workspace's limit; alone, two of them would send twice the
limit. With a Prefect server configured they also draw from one global concurrency limit per
workspace, so together they stay under it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LIMIT, WINDOW = 30, 3.0  # requests per window: two processes pacing alone would send twice this


def test_two_processes_on_one_workspace_share_its_rate_budget(run_env, make_account, add_events, emulator) -> None:
    make_account(
        "acct-1",
        customers=45 * 75,
        workspace={"rate_limit": LIMIT, "rate_window_seconds": WINDOW},
        track_rate_limit=LIMIT,
        track_rate_window_seconds=WINDOW,
    )
    add_events("acct-1", 45 * 75)  # 45 requests of events, 45 of customers

    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "sync", entity, "--account", "acct-1"],
            env=run_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for entity in ("events", "customers")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    elapsed = time.monotonic() - started
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out

    stats = emulator.stats("acct-1")
    assert stats.requests_by_path["/users/track"] == 90
    assert stats.rate_limited == 0, "together the two processes went over the workspace's limit"
    assert stats.max_in_window <= LIMIT
    assert elapsed < 120
