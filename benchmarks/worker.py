"""The benchmark's child processes: `python benchmarks/worker.py MODE ...` (started by run.py).

Each measured program runs in its own process, so none shares a GIL with another and each one's
peak RSS is its own (`ru_maxrss`, written with its timings as JSON to `--out`):

- `emulator`: the Braze emulator (uvicorn), configured by run.py through its admin API;
- `cli ARGS...`: the real CLI (`masivo-braze sync events`), i.e. the Prefect flows. Prefect's
  ephemeral API is started (and timed) before the command, and warmed by a no-op flow (a subflow
  and a task: what the command first imports, and the server's first answers on each route,
  both compiled from source on a host that keeps no .pyc), so `run_s` is the command itself, as
  on a worker talking to a running Prefect server; `--cold` leaves the warm-up out;
- `core`: the same stages, chained exactly as the `sync-account` flow chains its tasks (blocking
  stages in a worker thread, accounts concurrently), with no Prefect: the overhead reference;
- `baseline`: the same request bodies, built in memory first (a dry run), then POSTed by a plain
  httpx async loop at the same concurrency per account: the ceiling for the delivery path;
- `stages`: extract / validate+transform / pack over the whole backlog, one account at a time on
  one thread, read-only (no ledger, no cursor): the stages' own throughput;
- `live`: the core live session (what `masivo-braze live` runs) until SIGTERM;
- `writers`: commits changes at a steady rate (or new customers and their first events) and
  records each change's commit time, for the live scenario's commit → Braze latencies.
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


def _prefect_warm() -> None:
    """One no-op flow with a subflow and a task: the engines' first imports, the server's first routes."""
    from prefect import flow, task

    @task(persist_result=False)
    async def noop_task() -> None:
        return None

    @flow(persist_result=False)
    async def noop_child() -> None:
        await noop_task()

    @flow(persist_result=False)
    async def noop_parent() -> None:
        await noop_child()

    asyncio.run(noop_parent())


class _ApiCalls:
    """Every HTTP request this process sends to Prefect's API during the command, by method and path.

    Prefect's clients are `httpx.AsyncClient`/`httpx.Client` subclasses (the Braze client sends on
    its transport, so it is not counted); ids in paths become `{id}`. Counted from `start()`.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        #: (start, seconds, key) of each request, start in seconds since `on` was set
        self.timeline: list[tuple[float, float, str]] = []
        self.started = 0.0
        self.on = False

    def install(self) -> None:
        import re

        import httpx

        ident = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
        counter = self

        def key(request) -> str | None:
            path = request.url.path
            return f"{request.method} {ident.sub('{id}', path)}" if "/api/" in path else None

        original_async, original_sync = httpx.AsyncClient.send, httpx.Client.send

        async def send_async(client, request, *args, **kwargs):
            t = time.perf_counter()
            try:
                return await original_async(client, request, *args, **kwargs)
            finally:
                counter.record(key(request), t)

        def send_sync(client, request, *args, **kwargs):
            t = time.perf_counter()
            try:
                return original_sync(client, request, *args, **kwargs)
            finally:
                counter.record(key(request), t)

        httpx.AsyncClient.send, httpx.Client.send = send_async, send_sync

    def start(self) -> None:
        self.started, self.on = time.perf_counter(), True

    def record(self, key: str | None, started: float) -> None:
        if self.on and key:
            seconds = time.perf_counter() - started
            self.calls[key] += 1
            self.seconds[key] += seconds
            self.timeline.append((round(started - self.started, 3), round(seconds, 3), key))


def cli(ns: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    api = _ApiCalls()
    api.install()
    import prefect  # noqa: F401  (timed: part of Prefect's one-off cost)

    import flows  # noqa: F401  (the command imports them on first use: a process-start cost too)
    from app.cli import app

    t_import = time.perf_counter()
    asyncio.run(_prefect_ready())
    t_up = time.perf_counter()
    if not ns.cold:
        _prefect_warm()
    t_ready, cpu, epoch_start = time.perf_counter(), time.process_time(), time.time()
    imported = set(sys.modules)
    api.start()
    try:
        code = app(args=ns.args, prog_name="masivo-braze", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
    t_end, run_cpu, epoch_end = time.perf_counter(), time.process_time() - cpu, time.time()
    api.on = False
    _write(
        ns.out,
        {
            "import_s": t_import - t0,
            "prefect_ready_s": t_up - t_import,
            "prefect_warm_s": t_ready - t_up,  # 0 with --cold
            "run_s": t_end - t_ready,
            "run_epoch": [epoch_start, epoch_end],  # to place the run against Prefect's timestamps
            "run_cpu_s": run_cpu,
            "exit_code": code or 0,
            # Prefect API requests during the command (the flow process's side): count, summed seconds
            "prefect_api_calls": dict(api.calls.most_common()),
            "prefect_api_seconds": {k: round(v, 3) for k, v in api.seconds.most_common()},
            "prefect_api_timeline": sorted(api.timeline),
            # modules the command imported on first use (compiled from source when no .pyc is kept)
            "imported_during_run": sorted(set(sys.modules) - imported),
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
                async with AccountRun(db, ENTITIES[ns.entity], account, partition=ns.partition) as run:
                    await run.run()
                return run.summary
            # the sync-account flow's loop (AccountRun.step), stage for stage, without Prefect
            async with AccountRun(db, ENTITIES[ns.entity], account, stage_runner=timed, partition=ns.partition) as run:
                while (result := await run.step()) is not None:
                    timer.rows["extract"] += result.rows_read
                    timer.rows["deliver"] += result.objects_sent
            return run.summary

    async def main():
        db, accounts = await asyncio.to_thread(_accounts, ns.entity)
        limit = asyncio.Semaphore(get_settings().account_concurrency)
        return await asyncio.gather(*(one(db, a, limit) for a in accounts))

    t_start, cpu, epoch_start = time.perf_counter(), time.process_time(), time.time()
    summaries = asyncio.run(main())
    t_end, run_cpu, epoch_end = time.perf_counter(), time.process_time() - cpu, time.time()
    from masivo_braze_sync.braze import limiters

    _write(
        ns.out,
        {
            "import_s": t_import - t0,
            "run_s": t_end - t_start,
            "run_epoch": [epoch_start, epoch_end],
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
            if spec.log_rows:  # the same range read as two halves on two connections at once
                t = time.perf_counter()
                spec.extract(db.url, account.account_id, rng, readers=2)
                sec["extract_2"] += time.perf_counter() - t
                rows["extract_2"] += frame.height
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


# -- live mode -------------------------------------------------------------------------------------


def live(ns: argparse.Namespace) -> None:
    """`masivo-braze live` without the CLI's printing: the core session until SIGTERM. Prints `ready`
    once LISTEN is in place and the first sweep ran; writes its counts and CPU time at the end."""
    from masivo_braze_sync.db import Database
    from masivo_braze_sync.live import BatchLine, LiveSession
    from masivo_braze_sync.live.signals import run_until_signalled

    statements = _count_statements()
    batches: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    requests: Counter[str] = Counter()

    def count(line: BatchLine) -> None:
        batches[line.consumer] += 1
        rows[line.consumer] += line.rows
        requests[line.consumer] += line.requests

    session = LiveSession(Database.from_settings(), on_batch=count)

    async def announce() -> None:
        while session.sweeps < 1:
            await asyncio.sleep(0.05)
        print("ready", flush=True)

    async def main() -> None:
        ready = asyncio.create_task(announce())
        await run_until_signalled(session)
        ready.cancel()

    asyncio.run(main())
    _write(
        ns.out,
        {
            "batches": dict(batches),
            "rows": dict(rows),
            "requests": dict(requests),
            "sweeps": session.sweeps,
            "reconnects": session.listener.reconnects,
            "summary": session.summary_rows(),
            "statement_times": statements,
        },
    )


def _count_statements() -> list[float]:
    """The epoch time of every statement this process sends through psycopg (the live scenario
    counts what it sends while idle; pg_stat_statements is usually not loaded). Measurement only:
    a wrapper around the cursors' execute methods (the connections' execute goes through them)."""
    import functools

    import psycopg

    times: list[float] = []

    def sync(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            times.append(time.time())
            return fn(*args, **kwargs)

        return wrapper

    def asynchronous(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            times.append(time.time())
            return await fn(*args, **kwargs)

        return wrapper

    for cls in (psycopg.Cursor, psycopg.ServerCursor):
        cls.execute = sync(cls.execute)
    psycopg.Cursor.executemany = sync(psycopg.Cursor.executemany)
    psycopg.AsyncCursor.execute = asynchronous(psycopg.AsyncCursor.execute)
    return times


#: what a writer's change is, by share of the changes: events 60%, purchases 20%, customer updates 20%
CHANGE_MIX = (("event", 0.6), ("purchase", 0.2), ("customer", 0.2))


def writers(ns: argparse.Namespace) -> None:
    """One thread per account commits changes at `--rate` changes/s in all for `--seconds`, in
    transactions every `--tick-ms` (each change picks its kind from CHANGE_MIX); or, with `--pairs`,
    new customers each followed within 0-50 ms by its first event (separate transactions).
    Writes the commit time (epoch, after COMMIT returned) of every change, by its key."""
    import random
    import threading

    import psycopg

    accounts = ns.accounts.split(",")
    commits: dict[str, float] = {}
    # every 100th seeded customer is soft-deleted (seed.py): its changes are skipped by design
    live_customers = [g for g in range(1, ns.customers + 1) if g % 100]
    lock = threading.Lock()

    def steady(n: int, account: str) -> None:
        rng = random.Random(n)
        per_tick = ns.rate / len(accounts) * ns.tick_ms / 1000
        kinds, weights = zip(*CHANGE_MIX, strict=True)
        seq, owed = 0, 0.0
        with psycopg.connect(ns.database_url) as conn:
            start = time.monotonic()
            tick = 0
            while time.monotonic() - start < ns.seconds:
                owed += per_tick
                k, owed = int(owed), owed - int(owed)
                keys = []
                with conn.cursor() as cur:
                    for kind in rng.choices(kinds, weights, k=k):
                        seq += 1
                        ident = f"{ns.tag}-{account}-{seq}"
                        if kind == "event":
                            cur.execute(
                                "INSERT INTO public.events (id, account_id, customer_id, type, properties, "
                                "occurred_at) VALUES (%s, %s, %s, 'STORE_VISIT', "
                                "jsonb_build_object('eid', %s::text, 'channel', 'app'), now())",
                                (ident, account, f"{account}-c{rng.choice(live_customers)}", ident),
                            )
                            keys.append(f"event:{ident}")
                        elif kind == "purchase":
                            customer = f"{account}-c{rng.choice(live_customers)}"
                            cur.execute(
                                "INSERT INTO public.orders (account_id, id, customer_id, status, currency, "
                                "fulfilled_at) VALUES (%s, %s, %s, 'FULFILLED', 'COP', now())",
                                (account, ident, customer),
                            )
                            cur.execute(
                                "INSERT INTO public.order_items (account_id, order_id, line_no, sku, name, quantity, "
                                "unit_price) VALUES (%s, %s, 1, 'SKU-1', 'Product 1', 1, 1000)",
                                (account, ident),
                            )
                            keys.append(f"purchase:{ident}")
                        else:  # a customer update: points carries a value unique to this change
                            customer = f"{account}-c{live_customers[(seq * 7919 + n) % len(live_customers)]}"
                            points = ns.points_base + n * 10_000_000 + seq
                            cur.execute(
                                "UPDATE public.customers SET points = %s, updated_at = now() "
                                "WHERE account_id = %s AND id = %s",
                                (points, account, customer),
                            )
                            keys.append(f"customer:{customer}:{points}")
                conn.commit()
                t = time.time()
                with lock:
                    commits.update(dict.fromkeys(keys, t))
                tick += 1
                time.sleep(max(0.0, start + tick * ns.tick_ms / 1000 - time.monotonic()))

    def pairs(n: int, account: str) -> None:
        rng = random.Random(n)
        with psycopg.connect(ns.database_url, autocommit=True) as conn:
            for i in range(ns.pairs // len(accounts)):
                customer = f"{account}-{ns.tag}-new{i}"
                conn.execute(
                    "INSERT INTO public.customers (account_id, id, email, tier) VALUES (%s, %s, %s, 'SILVER')",
                    (account, customer, f"{customer}@example.com"),
                )
                t = time.time()
                time.sleep(rng.uniform(0, 0.05))
                ident = f"{customer}-e1"
                conn.execute(
                    "INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at) "
                    "VALUES (%s, %s, %s, 'STORE_VISIT', jsonb_build_object('eid', %s::text), now())",
                    (ident, account, customer, ident),
                )
                with lock:
                    commits[f"new:{customer}"] = t
                    commits[f"event:{ident}"] = time.time()
                time.sleep(rng.uniform(0.05, 0.2))

    target = pairs if ns.pairs else steady
    threads = [threading.Thread(target=target, args=(n, a)) for n, a in enumerate(accounts)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _write(ns.out, {"commits": commits, "started": t0, "ended": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser(prog="worker.py")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("emulator").set_defaults(fn=emulator)
    p = sub.add_parser("cli")
    p.add_argument("--out", required=True)
    p.add_argument("--cold", action="store_true", help="no warm-up flow before the command (see the docstring)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cli)
    p = sub.add_parser("core")
    p.add_argument("--out", required=True)
    p.add_argument("--entity", default="events")
    p.add_argument("--inline", action="store_true", help="AccountRun.run() (stages on the event loop)")
    p.add_argument("--partition", type=int, default=None, help="only this partition of each account's entity")
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
    p = sub.add_parser("live")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=live)
    p = sub.add_parser("writers")
    p.add_argument("--out", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--accounts", required=True, help="comma-separated account ids")
    p.add_argument("--customers", type=int, required=True, help="seeded customers per account")
    p.add_argument("--tag", required=True, help="makes this phase's ids unique")
    p.add_argument("--rate", type=float, default=200.0, help="changes/s over all accounts")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--tick-ms", type=float, default=20.0, help="each writer commits every tick")
    p.add_argument("--points-base", type=int, default=0)
    p.add_argument("--pairs", type=int, default=0, help="new customer + first event pairs instead")
    p.set_defaults(fn=writers)
    ns = parser.parse_args()
    if ns.mode == "cli" and ns.args[:1] == ["--"]:
        ns.args = ns.args[1:]
    ns.fn(ns)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.exit(main())
