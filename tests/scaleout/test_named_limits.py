"""The Prefect rate limits an operator reads: named for the account and the rate, one per shared
workspace, replaced when a key or rate changes, and re-created when deleted under a running sync.

Each sync runs in its own process against a real Prefect server, as a worker's would.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import httpx

from masivo_braze_sync.braze.ratelimit import workspace_key
from masivo_braze_sync.budget import budget_shape
from masivo_braze_sync.emulator.state import Workspace
from tasks.concurrency import IDLE_MARGIN_SECONDS
from tests.scaleout.conftest import cli

ROOT = Path(__file__).resolve().parents[2]

#: saves a Prefect Secret block (name, value) on the server of the environment it runs in
SAVE_SECRET = "import sys; from prefect.blocks.system import Secret; Secret(value=sys.argv[2]).save(sys.argv[1])"


def all_limits(env: dict[str, str]) -> dict[str, dict]:
    """The server's global concurrency limits, by name."""
    response = httpx.post(f"{env['PREFECT_API_URL']}/v2/concurrency_limits/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return {gcl["name"]: gcl for gcl in response.json()}


def limits(env: dict[str, str], account: str) -> dict[str, dict]:
    """The server's global concurrency limits whose names mention `account`, by name."""
    return {name: gcl for name, gcl in all_limits(env).items() if f"-{account}-" in name}


def delete_limit(env: dict[str, str], name: str) -> bool:
    """Delete a limit by name; False when it was not there."""
    response = httpx.delete(f"{env['PREFECT_API_URL']}/v2/concurrency_limits/{name}", timeout=30)
    return response.status_code != 404


def wait_until_idle(env: dict[str, str], account: str) -> None:
    """Sleep until the slots taken on the account's limits have decayed (as the clean-up checks)."""
    for gcl in limits(env, account).values():
        time.sleep(gcl["active_slots"] / gcl["slot_decay_per_second"] + IDLE_MARGIN_SECONDS + 0.5)


def add_customers(db, account: str, n: int) -> None:
    """Insert `n` more customers of an account (75 make one /users/track request)."""
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO public.customers (account_id, id, email) "
            "SELECT %s, 'n' || g || '-' || (SELECT count(*) FROM public.customers), 'n' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            (account, n),
        )


def sync(env: dict[str, str], *args: str) -> None:
    result = cli("sync", "customers", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_two_accounts_on_one_workspace_share_one_limit_named_for_the_lower_id_and_the_strictest_rate(
    run_env, make_account, emulator
) -> None:
    make_account("lim-a", customers=75, track_rate_limit=60, track_rate_window_seconds=3)
    # the same workspace (endpoint and key), the key as it is and in a Prefect Secret block
    make_account("lim-b", customers=75, api_key="lim-a-key", track_rate_limit=30, track_rate_window_seconds=3)
    make_account("lim-c", customers=75, api_key="prefect-secret:lim-c-key", track_rate_limit=20)
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_SECRET, "lim-c-key", "lim-a-key"], env=run_env, capture_output=True, text=True
    )
    assert saved.returncode == 0, saved.stderr

    sync(run_env)

    named = limits(run_env, "lim-a") | limits(run_env, "lim-b") | limits(run_env, "lim-c")
    assert len(named) == 1, sorted(named)
    (name,) = named
    assert name.startswith("braze-lim-a-track-20-per-3s-"), name  # lim-c's rate: the strictest
    assert len(name.rsplit("-", 1)[1]) == 8  # a digest of the workspace, never the key
    assert "lim-a-key" not in name
    slots, decay = budget_shape(20, 3)
    assert (named[name]["limit"], named[name]["slot_decay_per_second"]) == (slots, decay)
    assert emulator.stats("lim-a").requests_by_path["/users/track"] == 3


def test_a_new_key_or_rate_leaves_only_the_new_limit(run_env, make_account, emulator, db) -> None:
    make_account("lim-k", customers=75, track_rate_limit=30, track_rate_window_seconds=3)
    sync(run_env, "--account", "lim-k")
    (first,) = limits(run_env, "lim-k")

    # a new key (another workspace), and a limit left over from the names used before
    emulator.add_workspace(Workspace(name="lim-k-new", api_key="lim-k-new-key"))
    with db.connection() as conn:
        conn.execute("UPDATE public.braze_integrations SET api_key = 'lim-k-new-key' WHERE account_id = 'lim-k'")
        endpoint = conn.execute("SELECT rest_endpoint FROM public.braze_integrations").fetchone()[0]
    legacy = f"braze-track-{hashlib.sha256(workspace_key(endpoint, 'lim-k-new-key').encode()).hexdigest()[:16]}"
    httpx.post(
        f"{run_env['PREFECT_API_URL']}/v2/concurrency_limits/",
        json={"name": legacy, "limit": 3, "slot_decay_per_second": 1.0},
        timeout=30,
    ).raise_for_status()
    add_customers(db, "lim-k", 75)
    wait_until_idle(run_env, "lim-k")
    sync(run_env, "--account", "lim-k")
    (second,) = limits(run_env, "lim-k")
    assert second != first
    assert second.startswith("braze-lim-k-track-30-per-3s-")
    assert not delete_limit(run_env, legacy), "the old-style limit of the workspace was left behind"

    with db.connection() as conn:
        conn.execute("UPDATE public.braze_integrations SET track_rate_limit = 20 WHERE account_id = 'lim-k'")
    add_customers(db, "lim-k", 75)
    wait_until_idle(run_env, "lim-k")
    sync(run_env, "--account", "lim-k")
    (third,) = limits(run_env, "lim-k")
    assert third.startswith("braze-lim-k-track-20-per-3s-")
    assert third.rsplit("-", 1)[1] == second.rsplit("-", 1)[1]  # same workspace, same digest
    assert emulator.stats("lim-k-new").requests_by_path["/users/track"] == 2


def test_a_sync_whose_limit_is_deleted_goes_on_within_the_rate(run_env, make_account, emulator) -> None:
    limit, window = 30, 3.0
    make_account(
        "lim-d",
        customers=60 * 75,  # 60 requests: several windows at 30 per 3 s
        workspace={"rate_limit": limit, "rate_window_seconds": window},
        track_rate_limit=limit,
        track_rate_window_seconds=window,
    )

    before = set(all_limits(run_env))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sync", "customers", "--account", "lim-d"],
        env=run_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deleted = 0
    deadline = time.monotonic() + 240
    while proc.poll() is None and deleted < 2 and time.monotonic() < deadline:
        # the run's limit, whatever its name: the one that was not there before
        for name in set(all_limits(run_env)) - before:
            if (
                proc.poll() is None
                and emulator.stats("lim-d").requests >= 10 * (deleted + 1)
                and delete_limit(run_env, name)
            ):
                deleted += 1
        time.sleep(0.2)
    out = proc.communicate(timeout=300)[0]

    assert proc.returncode == 0, out
    assert deleted == 2, "the sync ended before its limit could be deleted twice"
    stats = emulator.stats("lim-d")
    assert stats.requests_by_path["/users/track"] == 60
    assert stats.rate_limited == 0
    assert stats.max_in_window <= limit
    assert set(all_limits(run_env)) - before, "the limit was not created again"
