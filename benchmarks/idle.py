"""An idle `masivo-braze sync events` over many accounts vs one account (issue 14, item 1).

    uv run python benchmarks/idle.py [--accounts 200] [--repeats 3]

Creates a database (`masivo_idle_<random>`) on MASIVO_DATABASE_URL's server, starts a Prefect
server (SQLite in a temporary PREFECT_HOME) and the Braze emulator, then times the CLI in its own
process, as the scheduler's worker would run the flow:

- `1 idle`: one account, nothing to send;
- `N idle`: N accounts, nothing to send (the parent looks at every backlog in one query and starts
  no account run);
- `1 busy`: one account with 100 events to send (one account run: the reference for "work").

Prints medians of `--repeats` runs, interleaved; drops the database at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scratch import scratch_database  # noqa: E402
from masivo_braze_sync.db import Database  # noqa: E402
from masivo_braze_sync.emulator import EmulatorServer, EmulatorState, Workspace  # noqa: E402
from masivo_braze_sync.settings import Settings  # noqa: E402
from tests.prefect_server import running_prefect_server  # noqa: E402


def _add_accounts(url: str, ids: list[str], endpoint: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for account in ids:
            conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s)", (account, account))
            conn.execute(
                "INSERT INTO braze_integrations (account_id, api_key, rest_endpoint) VALUES (%s, %s, %s)",
                (account, f"{account}-key", endpoint),
            )
            conn.execute("INSERT INTO customers (account_id, id, email) VALUES (%s, 'c1', NULL)", (account,))


def _add_events(url: str, account: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
            "SELECT %s || '-' || gen_random_uuid(), %s, 'c1', 'VISIT', '{}', now() FROM generate_series(1, %s)",
            (account, account, n),
        )


def _timed_sync(env: dict[str, str], accounts: list[str]) -> float:
    args = [a for account in accounts for a in ("--account", account)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "sync", "events", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    server_url = Database.from_settings(Settings()).url
    state = EmulatorState()
    with scratch_database(server_url, "masivo_idle") as url:
        many = [f"idle-{i:04d}" for i in range(opts.accounts)]
        with EmulatorServer(state, host="127.0.0.1", port=0) as emulator, tempfile.TemporaryDirectory() as home:
            for account in [*many, "busy"]:
                state.add_workspace(Workspace(name=account, api_key=f"{account}-key"))
            _add_accounts(url, [*many, "busy"], emulator.url)
            with running_prefect_server(Path(home)) as prefect_env:
                env = {
                    **os.environ,
                    **prefect_env,
                    "MASIVO_DATABASE_URL": url,
                    "MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS": "1",
                }
                env.pop("PREFECT_LOGGING_LEVEL")
                _timed_sync(env, many)  # warm-up: first-run imports, the server's first writes
                times: dict[str, list[float]] = {"1 idle": [], f"{opts.accounts} idle": [], "1 busy (100 events)": []}
                for _ in range(opts.repeats):
                    times["1 idle"].append(_timed_sync(env, many[:1]))
                    times[f"{opts.accounts} idle"].append(_timed_sync(env, many))
                    _add_events(url, "busy", 100)
                    times["1 busy (100 events)"].append(_timed_sync(env, ["busy"]))
        base = statistics.median(times["1 idle"])
        print("| run | median s | vs 1 idle | runs (s) |\n|---|---|---|---|")
        for label, values in times.items():
            med = statistics.median(values)
            print(f"| {label} | {med:.1f} | {med / base:.2f}x | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
