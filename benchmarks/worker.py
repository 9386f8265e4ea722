"""The benchmark's child processes: `python benchmarks/worker.py MODE ...` (started by run.py).

Each measured program runs in its own process, so none shares a GIL with another and each one's
peak RSS is its own (`ru_maxrss`, written with its timings as JSON to `--out`):

- `emulator`: the Braze emulator (uvicorn), configured by run.py through its admin API;
- `cli ARGS...`: the real CLI (`masivo-braze sync events`), i.e. the Prefect flows. Prefect's
  ephemeral API is started (and timed) before the command, so `run_s` is the command itself,
  as on a worker talking to a running Prefect server;
- `core`: the same stages, chained exactly as the `sync-account` flow chains its tasks (blocking
  stages in a worker thread, accounts concurrently), with no Prefect: the overhead reference;
- `baseline`: the same request bodies, built in memory first (a dry run), then POSTed by a plain
  httpx async loop at the same concurrency per account: the ceiling for the delivery path;
- `stages`: extract / validate+transform / pack over the whole backlog, one account at a time on
  one thread, read-only (no ledger, no cursor): the stages' own throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path


def _write(path: str, data: dict) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    data["maxrss_mb"] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
    data["cpu_s"] = usage.ru_utime + usage.ru_stime  # this process's CPU time, all threads
    if os.environ.get("PYTHONTRACEMALLOC"):  # profiling memory: Python's own share of the peak
        import tracemalloc

        data["python_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        snap = tracemalloc.take_snapshot()
        data["python_top"] = [str(s) for s in snap.statistics("lineno")[:8]]
    Path(path).write_text(json.dumps(data, default=str))


def _accounts(entity: str):
    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.entities import ENTITIES

    db = Database.from_settings()
    with db.connection() as conn:
        return db, [a for a in load_accounts(conn) if ENTITIES[entity].is_enabled(a)]


# -- emulator ------------------------------------------------------------------------------------


def emulator(_: argparse.Namespace) -> None:
    from masivo_braze_sync.emulator import EmulatorState, serve

    serve(EmulatorState(), host="127.0.0.1", port=0, on_ready=lambda url: print(url, flush=True))


# -- the CLI (Prefect flows) ---------------------------------------------------------------------


async def _prefect_ready() -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:  # starts the ephemeral API once for this process
        await client.api_healthcheck()


def cli(ns: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    import prefect  # noqa: F401  (timed: part of Prefect's one-off cost)

    import flows  # noqa: F401  (the command imports them on first use: a process-start cost too)
    from app.cli import app

    t_import = time.perf_counter()
    asyncio.run(_prefect_ready())
    t_ready, cpu, epoch_start = time.perf_counter(), time.process_time(), time.time()
    try:
        code = app(args=ns.args, prog_name="masivo-braze", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    t_end, run_cpu, epoch_end = time.perf_counter(), time.process_time() - cpu, time.time()
    _write(
        ns.out,
        {
            "import_s": t_import - t0,
            "prefect_ready_s": t_ready - t_import,
            "run_s": t_end - t_ready,
            "run_epoch": [epoch_start, epoch_end],  # to place the run against Prefect's timestamps
            "run_cpu_s": run_cpu,
            "exit_code": code or 0,
        },
    )


# -- the core pipeline without Prefect ---------------------------------------------------------


class _Timer:
    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()


def core(ns: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.pipeline import AccountRun
    from masivo_braze_sync.settings import get_settings

    t_import = time.perf_counter()
    timer = _Timer()

    async def timed(name: str, call):
        # the stage runner the flow uses minus Prefect: each stage timed (read-ahead overlaps deliver)
        t = time.perf_counter()
        out = await call()
        timer.seconds[name.replace("-", "_")] += time.perf_counter() - t
        return out

    async def one(db, account, limit):
        async with limit:
            if ns.inline:  # every stage inline, no read-ahead timing
                async with AccountRun(db, ENTITIES[ns.entity], account) as run:
                    await run.run()
                return run.summary
            # the sync-account flow's loop (AccountRun.step), stage for stage, without Prefect
            async with AccountRun(db, ENTITIES[ns.entity], account, stage_runner=timed) as run:
                while (result := await run.step()) is not None:
                    timer.rows["extract"] += result.rows_read
                    timer.rows["deliver"] += result.objects_sent
            return run.summary

    async def main():
        db, accounts = await asyncio.to_thread(_accounts, ns.entity)
        limit = asyncio.Semaphore(get_settings().account_concurrency)
        return await asyncio.gather(*(one(db, a, limit) for a in accounts))

    t_start, cpu = time.perf_counter(), time.process_time()
    summaries = asyncio.run(main())
    t_end, run_cpu = time.perf_counter(), time.process_time() - cpu
    from masivo_braze_sync.braze import limiters

    _write(
        ns.out,
        {
            "import_s": t_import - t0,
            "run_s": t_end - t_start,
            "run_cpu_s": run_cpu,
            "stage_seconds": dict(timer.seconds),
            "stage_rows": dict(timer.rows),
            "summaries": [s.as_dict() for s in summaries],
            # what the pacer learned from Braze's headers (issue 16)
            "pacers": [p for p in limiters.snapshot() if p["bucket"] == "track"],
        },
    )


# -- the hand-written baseline -------------------------------------------------------------------


def baseline(ns: argparse.Namespace) -> None:
    import httpx

    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.pipeline import AccountRun
    from masivo_braze_sync.settings import get_settings

    settings = get_settings()
    db, accounts = _accounts(ns.entity)
    payloads: dict[str, list[bytes]] = {}
    t = time.perf_counter()
    for account in accounts:
        bodies: list[bytes] = []
        run = AccountRun(db, ENTITIES[ns.entity], account, dry_run=True, printer=bodies.append)

        async def build(run=run) -> None:
            async with run:
                await run.run()

        asyncio.run(build())
        payloads[account.account_id] = bodies
    build_s = time.perf_counter() - t
    statuses: Counter[int] = Counter()

    async def send(account, bodies: list[bytes]) -> None:
        n = settings.braze_concurrency
        async with httpx.AsyncClient(
            base_url=account.rest_endpoint,
            headers={"Authorization": f"Bearer {account.api_key}", "Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            timeout=30.0,
        ) as client:
            it = iter(bodies)

            async def worker() -> None:
                for body in it:
                    response = await client.post("/users/track", content=body)
                    statuses[response.status_code] += 1

            await asyncio.gather(*(worker() for _ in range(n)))

    async def main() -> None:
        await asyncio.gather(*(send(a, payloads[a.account_id]) for a in accounts))

    t, cpu = time.perf_counter(), time.process_time()
    asyncio.run(main())
    send_s, send_cpu = time.perf_counter() - t, time.process_time() - cpu
    _write(
        ns.out,
        {
            "build_s": build_s,
            "run_s": send_s,
            "send_cpu_s": send_cpu,
            "requests": sum(len(b) for b in payloads.values()),
            "statuses": dict(statuses),
        },
    )


# -- stage throughput ------------------------------------------------------------------------------


PLAIN_EVENTS_SQL = (
    "SELECT id, customer_id, type, properties::text AS properties, occurred_at FROM public.events "
    "WHERE account_id = $1 LIMIT $2"
)


def stages(ns: argparse.Namespace) -> None:
    from masivo_braze_sync.batch import pack
    from masivo_braze_sync.capture import Position, next_range
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.entities.base import AccountContext
    from masivo_braze_sync.extract import read_frame
    from masivo_braze_sync.settings import get_settings

    settings = get_settings()
    spec = ENTITIES[ns.entity]
    db, accounts = _accounts(ns.entity)
    # the ranges first (the log, not a stage measured here)
    ranges = []
    with db.connection() as conn:
        for account in accounts:
            pos = Position.start()
            while rng := next_range(
                conn, entities=spec.captured, account_id=account.account_id, after=pos, limit=settings.batch_rows
            ):
                ranges.append((account, rng))
                pos = rng.upto
    passes = []
    for n in range(ns.repeats + 1):  # pass 0 warms the caches and is not counted
        sec = Counter()
        rows = Counter()
        for account, rng in ranges:
            ctx = AccountContext(account.account_id, account.currency, dict(account.toggles))
            t = time.perf_counter()
            frame = spec.extract(db.url, account.account_id, rng)
            sec["extract"] += time.perf_counter() - t
            rows["extract"] += frame.height
            if ns.entity == "events":  # the host's ceiling: as many rows, same columns, no log, no join
                t = time.perf_counter()
                read_frame(db.url, PLAIN_EVENTS_SQL, (account.account_id, frame.height))
                sec["plain_read"] += time.perf_counter() - t
                rows["plain_read"] += frame.height
            t1, c1 = time.perf_counter(), time.thread_time()
            valid = spec.validate(frame, ctx).frame
            objects = spec.transform(valid, ctx).frame
            t2 = time.perf_counter()
            sec["transform_cpu"] += time.thread_time() - c1
            plans = pack(objects, max_objects=settings.objects_per_request, combined=account.combined_object_limit)
            t3 = time.perf_counter()
            sec["transform"] += t2 - t1
            sec["pack"] += t3 - t2
            rows["transform"] += frame.height
            rows["transform_cpu"] += frame.height
            rows["pack"] += objects.height
            rows["requests"] += len(plans)
        if n:
            passes.append({"seconds": dict(sec), "rows": dict(rows)})
    _write(ns.out, {"passes": passes, "batches": len(ranges)})


def main() -> None:
    parser = argparse.ArgumentParser(prog="worker.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("emulator").set_defaults(fn=emulator)
    p = sub.add_parser("cli")
    p.add_argument("--out", required=True)
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cli)
    p = sub.add_parser("core")
    p.add_argument("--out", required=True)
    p.add_argument("--entity", default="events")
    p.add_argument("--inline", action="store_true", help="AccountRun.run() (stages on the event loop)")
    p.set_defaults(fn=core)
    p = sub.add_parser("baseline")
    p.add_argument("--out", required=True)
    p.add_argument("--entity", default="events")
    p.set_defaults(fn=baseline)
    p = sub.add_parser("stages")
    p.add_argument("--out", required=True)
    p.add_argument("--entity", default="events")
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(fn=stages)
    ns = parser.parse_args()
    if ns.mode == "cli" and ns.args[:1] == ["--"]:
        ns.args = ns.args[1:]
    ns.fn(ns)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.exit(main())
