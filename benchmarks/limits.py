"""What a run's first take from its Prefect rate limit costs, old names vs named for the account.

    uv run python benchmarks/limits.py [--accounts 1,200,1000] [--secrets 10] [--repeats 5]

Creates a database (`masivo_limits_<random>`) on MASIVO_DATABASE_URL's server and starts a
Prefect server (SQLite in a temporary PREFECT_HOME). For each account count N it configures N
accounts on one endpoint (and `--secrets` more whose keys are in Prefect Secret blocks), then
times, interleaved, in this process:

- `old first take`: what a run did before, once per process: upsert the limit, take one slot;
- `new first take`: a fresh `PrefectRateBudget` (once per run and bucket): read the accounts,
  load the Secret blocks on the endpoint (first run of a process; later runs reuse them for
  `SECRET_WORKSPACE_SECONDS`), upsert, list the limits for superseded ones, take;
- `next take`: the same budget's second take (one `rate_limit` call, both versions).

Prints medians in milliseconds; drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scratch import scratch_database  # noqa: E402
from masivo_braze_sync.db import Database  # noqa: E402
from masivo_braze_sync.settings import Settings, get_settings  # noqa: E402
from tests.prefect_server import running_prefect_server  # noqa: E402

ENDPOINT = "https://rest.iad-01.braze.com"


def _set_accounts(url: str, n: int, secrets: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE accounts, braze_integrations CASCADE")
        rows = [(f"a{i:05d}", f"a{i:05d}-key") for i in range(n)]
        rows += [(f"s{i:03d}", f"prefect-secret:bench-key-{i}") for i in range(secrets)]
        for account, key in rows:
            conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s)", (account, account))
            conn.execute(
                "INSERT INTO braze_integrations (account_id, api_key, rest_endpoint) VALUES (%s, %s, %s)",
                (account, key, ENDPOINT),
            )


async def _measure(counts: list[int], secrets: int, repeats: int, url: str) -> dict[str, list[float]]:
    # imported here: Prefect reads PREFECT_API_URL when it is first imported
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.concurrency.asyncio import rate_limit

    from masivo_braze_sync.braze.ratelimit import workspace_key
    from masivo_braze_sync.budget import budget_shape
    from tasks import concurrency
    from tasks.concurrency import PrefectRateBudget

    for i in range(secrets):
        await Secret(value=f"bench-secret-{i}").save(f"bench-key-{i}", overwrite=True)
    slots, decay = budget_shape(100_000, 1.0)  # a high rate: the takes never wait for slots
    times: dict[str, list[float]] = {}
    for n in counts:
        _set_accounts(url, n, secrets)
        workspace = workspace_key(ENDPOINT, "a00000-key")
        for r in range(repeats + 1):  # the first round warms up
            started = time.perf_counter()
            async with get_client() as client:
                await client.upsert_global_concurrency_limit_by_name(
                    f"bench-old-{n}", slots, slot_decay_per_second=decay
                )
            await rate_limit(f"bench-old-{n}", occupy=1, strict=True)
            old = time.perf_counter() - started

            concurrency._block_workspaces.clear()  # as in a new process: every Secret block loaded
            started = time.perf_counter()
            await PrefectRateBudget(workspace, "track", 100_000, 1.0).take(1)
            cold = time.perf_counter() - started

            budget = PrefectRateBudget(workspace, "track", 100_000, 1.0)
            started = time.perf_counter()
            await budget.take(1)
            new = time.perf_counter() - started
            started = time.perf_counter()
            await budget.take(1)
            nxt = time.perf_counter() - started
            if r:
                for label, value in (
                    (f"old first take, {n} accounts", old),
                    (f"new first take, {n} accounts, Secret blocks loaded", cold),
                    (f"new first take, {n} accounts, blocks known", new),
                ):
                    times.setdefault(label, []).append(value * 1000)
                times.setdefault("next take (both)", []).append(nxt * 1000)
    return times


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", default="1,200,1000")
    parser.add_argument("--secrets", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()

    server_url = Database.from_settings(Settings()).url
    with scratch_database(server_url, "masivo_limits") as url:
        with tempfile.TemporaryDirectory() as home, running_prefect_server(Path(home)) as prefect_env:
            os.environ.update({**prefect_env, "MASIVO_DATABASE_URL": url})
            get_settings.cache_clear()
            counts = [int(c) for c in opts.accounts.split(",")]
            times = asyncio.run(_measure(counts, opts.secrets, opts.repeats, url))
        print(f"| take (+{opts.secrets} accounts with Secret-block keys) | median ms | runs (ms) |")
        print("|---|---|---|")
        for label, values in times.items():
            print(f"| {label} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
