"""More than one process for one account's entity: partitions by customer, each its own consumer
(docs/change-capture.md#partitions). Every event arrives exactly once, each customer's events in
log order and after its profile, with two partitions running at once, across changes of the
partition count, and after a partition's process dies mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from masivo_braze_sync import partitions
from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import CUSTOMERS, ENTITIES, EVENTS, PURCHASES
from masivo_braze_sync.errors import ConfigurationError
from masivo_braze_sync.idle import accounts_with_work
from masivo_braze_sync.partitions import PartitionsBusy
from masivo_braze_sync.pipeline import AccountBusy, AccountRun
from masivo_braze_sync.repartition import repartition
from masivo_braze_sync.settings import get_settings
from masivo_braze_sync.status import account_status
from tests.capture_helpers import Writers, settle


def _account(account_id: str = "acct-1"):
    db = Database(os.environ["MASIVO_DATABASE_URL"])
    with db.connection() as conn:
        (account,) = load_accounts(conn, [account_id])
    return db, account


def set_count(db, entity: str, n: int, account_id: str = "acct-1") -> partitions.Change:
    return partitions.change_count(db, entity, ENTITIES[entity].captured, account_id, n)


def run_parts(entity: str, parts: list[int | None], account_id: str = "acct-1", **kwargs) -> list:
    """Run the given partitions of the entity at once (each its own consumer, lock and sessions)."""
    db, account = _account(account_id)

    async def one(p):
        async with AccountRun(db, ENTITIES[entity], account, partition=p, **kwargs) as run:
            await run.run()
        return run.summary

    async def all_of():
        return await asyncio.gather(*(one(p) for p in parts))

    return asyncio.run(all_of())


def event_arrivals(emulator, workspace: str = "acct-1") -> list[tuple[str, str]]:
    """(customer, event id) of every event the emulator stored, in arrival order."""
    arrivals = emulator.arrivals(workspace)
    return [(obj["external_id"], obj["properties"]["eid"]) for _, array, obj in arrivals if array == "events"]


def log_order(db, account_id: str = "acct-1") -> dict[str, tuple[int, int]]:
    """Each event's place in the change log's order, (txid, id): its writer's transaction id, then
    its statement within it (`Writers` numbers them `w<writer>-t<txn>-e<n>`, one statement each).
    The log itself is pruned as partitions commit."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT id, xmin::text::bigint FROM public.events WHERE account_id = %s", (account_id,)
        ).fetchall()
    return {eid: (txid, int(eid.rsplit("-e", 1)[1])) for eid, txid in rows}


def test_every_log_row_carries_the_bucket_of_its_customer_or_order_however_it_was_written(
    db, make_account, add_events
) -> None:
    make_account("acct-1", customers=3)
    add_events("acct-1", 2, customer="c2")
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO public.orders (account_id, id, customer_id, status, currency) "
            "VALUES ('acct-1', 'o1', 'c3', 'FULFILLED', 'USD')"
        )
        conn.execute(
            "INSERT INTO public.order_items (account_id, order_id, line_no, sku, quantity, unit_price) "
            "VALUES ('acct-1', 'o1', 1, 'a', 1, 2.5), ('acct-1', 'o1', 2, 'b', 1, 3)"
        )
        conn.execute("UPDATE public.customers SET email = 'x@example.com' WHERE id = 'c1'")
        conn.execute("INSERT INTO public.audiences (account_id, id, name) VALUES ('acct-1', 'a1', 'VIP')")
        conn.execute(
            "INSERT INTO public.audience_members (account_id, audience_id, customer_id) VALUES ('acct-1', 'a1', 'c1')"
        )
    # rows appended outside the capture triggers: `sync --full` and `retry-rejected`
    from masivo_braze_sync.requeue import full_resync

    for entity in (EVENTS, PURCHASES, CUSTOMERS):
        full_resync(db, entity, "acct-1", resend=True)
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) "
            "VALUES ('acct-1', 'order_items', '[\"o1\", 2]', 'R')"
        )
        rows = conn.execute(
            """
            SELECT l.entity, l.op, l.bucket, braze_sync.bucket_of(CASE l.entity
                WHEN 'customers' THEN l.entity_key
                WHEN 'events' THEN (SELECT e.customer_id FROM public.events e WHERE e.id = l.entity_key)
                WHEN 'orders' THEN l.entity_key
                WHEN 'order_items' THEN (l.entity_key::jsonb) ->> 0 END)
            FROM braze_sync.change_log l
            """
        ).fetchall()
    by_kind = Counter((entity, op) for entity, op, _, _ in rows)
    assert by_kind[("events", "I")] == 2
    assert by_kind[("events", "F")] == 2
    assert by_kind[("order_items", "I")] == 2
    assert by_kind[("order_items", "R")] == 1
    assert by_kind[("customers", "F")] == 3
    assert by_kind[("orders", "F")] == 1
    for entity, op, bucket, expected in rows:
        if entity in partitions.BUCKETED:
            assert bucket == expected, (entity, op)
            assert 0 <= bucket < partitions.BUCKETS
        else:
            assert bucket is None, (entity, op)  # audiences are never partitioned
    with db.connection() as conn:  # one customer, one bucket: its profile's and its events' rows agree
        (n,) = conn.execute(
            "SELECT count(DISTINCT bucket) FROM braze_sync.change_log "
            "WHERE (entity = 'customers' AND entity_key = 'c2') OR entity = 'events'"
        ).fetchone()
    assert n == 1


def test_two_partitions_at_once_deliver_every_committed_event_once_in_each_customers_log_order(
    db, make_account, emulator, received, monkeypatch
) -> None:
    # one request in flight per partition: each partition's own order is then the arrival order
    monkeypatch.setenv("MASIVO_BRAZE_CONCURRENCY", "1")
    monkeypatch.setenv("MASIVO_BATCH_ROWS", "150")
    get_settings.cache_clear()
    make_account("acct-1", customers=5)
    set_count(db, "events", 2)
    # writers hold transactions open for random times and roll some back, while both partitions
    # sync again and again: rows become visible out of id order all along
    writers = Writers(db.url, "acct-1", n=5, transactions=5).start()
    summaries = []
    while writers.alive():
        summaries += run_parts("events", [0, 1])
    writers.join()
    settle(db, "acct-1")
    summaries += run_parts("events", [0, 1])

    got = Counter(received("acct-1"))
    assert set(got) == set(writers.committed)  # nothing lost, nothing rolled back sent
    assert max(got.values()) == 1  # nothing doubled
    assert all(s.possibly_duplicated == 0 and s.status == "ok" for s in summaries)
    # both partitions did part of the work
    with db.connection() as conn:
        consumers = dict(
            conn.execute(
                "SELECT consumer, sum(log_rows) FROM braze_sync.batches WHERE account_id = 'acct-1' GROUP BY 1"
            ).fetchall()
        )
    assert set(consumers) == {"events#0of2", "events#1of2"}
    assert all(n > 0 for n in consumers.values())
    # each customer's events arrived in the log's order (a customer lives in one partition)
    order = log_order(db)
    per_customer: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for customer, eid in event_arrivals(emulator):
        per_customer[customer].append(order[eid])
    assert len(per_customer) == 5
    for customer, positions in per_customer.items():
        assert positions == sorted(positions), customer


def test_an_event_waits_for_its_profile_while_any_customers_partition_has_it_unsent(
    db, make_account, add_events, emulator, received
) -> None:
    make_account("acct-1")
    set_count(db, "customers", 2)
    set_count(db, "events", 2)
    run_parts("customers", [0, 1])  # caught up (to nothing) once: the bound exists from here on
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO public.customers (account_id, id, email) "
            "SELECT 'acct-1', 'n' || g, 'n' || g || '@example.com' FROM generate_series(1, 12) g"
        )
    ids = [eid for g in range(1, 13) for eid in add_events("acct-1", 2, customer=f"n{g}")]
    settle(db, "acct-1")
    with db.connection() as conn:
        buckets = {
            b % 2
            for (b,) in conn.execute("SELECT bucket FROM braze_sync.change_log WHERE entity = 'customers'").fetchall()
        }
    assert buckets == {0, 1}  # the new customers are in both partitions

    assert sum(s.objects_sent for s in run_parts("events", [0, 1])) == 0  # no profile sent yet
    run_parts("customers", [0])
    assert sum(s.objects_sent for s in run_parts("events", [0, 1])) == 0  # partition 1's profiles still wait
    run_parts("customers", [1])
    run_parts("events", [0, 1])
    assert sorted(received("acct-1")) == sorted(ids)

    first_profile: dict[str, int] = {}
    for i, (_, array, obj) in enumerate(emulator.arrivals("acct-1")):
        if array == "attributes":
            first_profile.setdefault(obj["external_id"], i)
        elif array == "events":
            assert first_profile.get(obj["external_id"], i) < i, obj["external_id"]


def test_the_count_changes_only_at_a_barrier_and_every_event_still_goes_once(
    db, make_account, add_events, received, monkeypatch
) -> None:
    monkeypatch.setenv("MASIVO_BATCH_ROWS", "40")
    get_settings.cache_clear()
    make_account("acct-1", customers=8)

    def add(n: int) -> list[str]:
        out = [eid for c in range(1, 9) for eid in add_events("acct-1", n, customer=f"c{c}")]
        settle(db, "acct-1")
        return out

    ids = add(5)
    run_parts("events", [None])  # one partition: the entity's own consumer
    ids += add(5)
    change = set_count(db, "events", 2)
    assert (change.before, change.after) == (1, 2)
    run_parts("events", [0])
    ids += add(5)
    # partition 1 has changes before partition 0's position: no new partition could start anywhere
    with pytest.raises(PartitionsBusy, match=r"events#1of2 has \d+ change"):
        set_count(db, "events", 3)
    # the change first sends what each lagging partition has up to the common position, then switches
    database, account = _account()
    change = asyncio.run(repartition(database, EVENTS, account, 3))
    assert (change.before, change.after) == (2, 3)
    ids += add(5)
    run_parts("events", [0, 1, 2])
    ids += add(5)
    run_parts("events", [2, 0, 1])
    set_count(db, "events", 1)
    ids += add(5)
    run_parts("events", [None])

    got = Counter(received("acct-1"))
    assert set(got) == set(ids)
    assert max(got.values()) == 1
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.partitions").fetchone()[0] == 0  # one: no row


def test_a_run_refuses_a_partition_that_does_not_exist_and_the_count_cannot_change_under_a_run(
    db, make_account, add_events
) -> None:
    make_account("acct-1", customers=1)
    add_events("acct-1", 3)
    set_count(db, "events", 2)
    with pytest.raises(ConfigurationError, match="events has 2 partitions"):
        run_parts("events", [None])
    with pytest.raises(ConfigurationError, match="partition must be 0 to 1"):
        run_parts("events", [2])
    with pytest.raises(ConfigurationError, match="audiences cannot be partitioned"):
        set_count(db, "audiences", 2)

    database, account = _account()

    async def change_during_a_run() -> None:
        async with AccountRun(database, EVENTS, account, partition=1):
            with pytest.raises(PartitionsBusy, match="events#1of2 sync is running"):
                await asyncio.to_thread(set_count, db, "events", 4)

    asyncio.run(change_during_a_run())

    async def stale_run() -> None:
        # a run that read the count before it changed finds it changed once it holds its lock
        run = AccountRun(database, EVENTS, account, partition=0)
        real = run._resolve_partition

        def resolve_then_change() -> None:
            real()
            set_count(db, "events", 1)

        run._resolve_partition = resolve_then_change
        with pytest.raises(AccountBusy, match="partitions of events changed"):
            async with run:
                pass

    asyncio.run(stale_run())


def test_pruning_keeps_what_a_lagging_partition_has_not_sent(db, make_account, add_events, received) -> None:
    make_account("acct-1", customers=6)
    first = [e for c in range(1, 7) for e in add_events("acct-1", 2, customer=f"c{c}")]
    settle(db, "acct-1")
    run_parts("events", [None])
    set_count(db, "events", 2)
    later = [e for c in range(1, 7) for e in add_events("acct-1", 2, customer=f"c{c}")]
    settle(db, "acct-1")
    database, account = _account()
    assert accounts_with_work(database, EVENTS, [account]) == {"acct-1"}
    with db.connection() as conn:
        assert account_status(conn, "acct-1", "events").backlog == len(later)
    run_parts("events", [0])  # prunes after it: partition 1's rows must stay
    with db.connection() as conn:
        assert account_status(conn, "acct-1", "events").backlog > 0
    assert accounts_with_work(database, EVENTS, [account]) == {"acct-1"}
    run_parts("events", [1])
    assert sorted(received("acct-1")) == sorted(first + later)
    assert accounts_with_work(database, EVENTS, [account]) == set()
    with db.connection() as conn:
        assert account_status(conn, "acct-1", "events").backlog == 0


# one partition of one account's events through the core pipeline, in its own process
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
    async with AccountRun(db, ENTITIES["events"], account, partition=int(sys.argv[2])) as run:
        await run.run()

asyncio.run(main())
print("finished")
"""


def _process(partition: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "acct-1", str(partition)],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_of_one_partition_mid_batch_loses_nothing_and_doubles_only_what_it_had_in_flight(
    db, make_account, add_events, emulator, received, monkeypatch
) -> None:
    monkeypatch.setenv("MASIVO_BRAZE_CONCURRENCY", "4")
    get_settings.cache_clear()
    make_account("acct-1", customers=16, workspace={"latency_seconds": 0.05})
    set_count(db, "events", 2)
    ids = [e for c in range(1, 17) for e in add_events("acct-1", 75 * 8, customer=f"c{c}")]
    settle(db, "acct-1")
    victim, survivor = _process(0), _process(1)
    try:
        deadline = time.monotonic() + 60
        while emulator.stats("acct-1").requests < 40:  # both well into delivery
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline, "the sync processes never got going"
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        _out, errors = survivor.communicate(timeout=120)
        assert survivor.returncode == 0, errors
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
    assert victim.returncode == -signal.SIGKILL
    with db.connection() as conn:
        open_batches = conn.execute("SELECT consumer FROM braze_sync.batches WHERE status = 'open'").fetchall()
    assert open_batches == [("events#0of2",)]  # the dead partition's batch waits; the other finished

    deadline = time.monotonic() + 10
    while True:  # the dead process's session (and its lock) goes away a moment after the kill
        try:
            (summary,) = run_parts("events", [0])
            break
        except AccountBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    got = Counter(received("acct-1"))
    assert set(got) == set(ids)  # nothing lost
    extra = sum(n - 1 for n in got.values())
    assert extra <= 75 * summary.possibly_duplicated  # every copy is a request the ledger flagged
    with db.connection() as conn:
        survivor_keys = {
            k
            for (keys,) in conn.execute(
                "SELECT d.keys FROM braze_sync.deliveries d JOIN braze_sync.batches b ON b.id = d.batch_id "
                "WHERE b.consumer = 'events#1of2' AND d.status = 'delivered'"
            ).fetchall()
            for k in keys
        }
    assert survivor_keys
    assert all(got[k] == 1 for k in survivor_keys)
    assert run_parts("events", [0, 1])[0].rows_read == 0
