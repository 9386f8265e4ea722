"""The purchases pipeline end to end: real Postgres, the emulator over loopback HTTP, no Prefect."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from psycopg.types.json import Jsonb

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import PURCHASES
from masivo_braze_sync.pipeline import AccountRun
from tests.capture_helpers import settle

STAMP = {"FULFILLED": "fulfilled_at", "REVERSED": "reversed_at", "CANCELLED": "cancelled_at"}


def add_order(db, account: str, order_id: str, lines, *, customer: str = "c1", status: str = "PENDING", **cols):
    """Insert an order and its lines: `lines` = [(sku, quantity, unit_price), ...] or dicts."""
    stamp = {STAMP[status]: "now()"} if status in STAMP else {}
    extra = {**cols, **stamp}
    names = ", ".join(["account_id", "id", "customer_id", "status", *extra])
    values = ", ".join(["%s"] * 4 + [v if v == "now()" else "%s" for v in extra.values()])
    params = [account, order_id, customer, status, *(v for v in extra.values() if v != "now()")]
    with db.connection() as conn:
        conn.execute(f"INSERT INTO orders ({names}) VALUES ({values})", params)
        for n, item in enumerate(lines, start=1):
            row = item if isinstance(item, dict) else dict(zip(("sku", "quantity", "unit_price"), item, strict=True))
            row = {"line_no": n, "name": f"Product {n}"} | row
            if "properties" in row:
                row["properties"] = Jsonb(row["properties"])
            conn.execute(
                f"INSERT INTO order_items (account_id, order_id, {', '.join(row)}) "
                f"VALUES (%s, %s, {', '.join(['%s'] * len(row))})",
                [account, order_id, *row.values()],
            )


def set_status(db, account: str, order_id: str, status: str) -> None:
    stamp = f", {STAMP[status]} = now()" if status in STAMP else ""
    with db.connection() as conn:
        conn.execute(
            f"UPDATE orders SET status = %s, updated_at = now(){stamp} WHERE account_id = %s AND id = %s",
            (status, account, order_id),
        )


def purchases(emulator, account: str, customer: str = "c1") -> list[dict]:
    profile = emulator.profile(account, customer)
    return [] if profile is None else profile.purchases


def revenue(items: list[dict]) -> Decimal:
    return sum((Decimal(repr(p["price"])) * p["quantity"] for p in items), Decimal(0))


def ledger(db, account: str) -> dict[tuple[str, int, str], tuple]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT order_id, line_no, sign, product_id, currency, unit_price, quantity, split, reason "
            "FROM braze_sync.purchase_lines WHERE account_id = %s",
            (account,),
        ).fetchall()
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


def rejects(db) -> dict[str, str]:
    with db.connection() as conn:
        return dict(conn.execute("SELECT entity_key, reason FROM braze_sync.rejected_rows ORDER BY id").fetchall())


def sync(run_sync, account: str = "acct-1"):
    settle(Database(os.environ["MASIVO_DATABASE_URL"]))
    return run_sync(account, "purchases")


def test_fulfilled_lines_become_purchases_once_and_a_second_run_sends_nothing(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=2)
    add_order(db, "acct-1", "o1", [("A", 2, "10.50"), ("B", 250, "1.99")], status="FULFILLED")
    add_order(db, "acct-1", "o2", [("C", 1, "5.00")], customer="c2", currency="EUR", status="FULFILLED")
    add_order(db, "acct-1", "o3", [("D", 1, "7.00")])  # pending: nothing

    summary = sync(run_sync)
    assert (summary.objects_sent, summary.requests, summary.rejected) == (5, 1, 0)
    got = purchases(emulator, "acct-1")
    assert sorted((p["product_id"], p["quantity"], p["price"]) for p in got) == [
        ("A", 2, 10.5),
        ("B", 50, 1.99),
        ("B", 100, 1.99),
        ("B", 100, 1.99),
    ]
    assert {p["currency"] for p in got} == {"USD"}
    a = next(p for p in got if p["product_id"] == "A")
    assert a["properties"] == {"order_id": "o1", "line_no": 1, "product_name": "Product 1", "purchase_id": "o1/1/+/0"}
    (c,) = purchases(emulator, "acct-1", "c2")
    assert c["currency"] == "EUR"
    assert ledger(db, "acct-1")[("o1", 2, "+")] == (
        "B",
        "USD",
        Decimal("1.99"),
        250,
        {"0": 100, "1": 100, "2": 50},
        None,
    )

    requests = emulator.stats("acct-1").requests
    with db.connection() as conn:  # touching a sent order changes nothing in Braze
        conn.execute("UPDATE orders SET updated_at = now() WHERE id = 'o1'")
    again = sync(run_sync)
    assert (again.rows_read, again.requests, again.skip_reasons) == (1, 0, {"order already sent": 1})
    assert emulator.stats("acct-1").requests == requests


def test_a_reversal_sends_the_negatives_of_what_was_sent_once(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 120, "3.25"), ("B", 1, "40.00")], status="FULFILLED")
    sync(run_sync)
    assert revenue(purchases(emulator, "acct-1")) == Decimal("430.00")

    # the line is edited after it was sent: recorded, not re-sent, and the reversal ignores it
    with db.connection() as conn:
        conn.execute("UPDATE order_items SET quantity = 3, unit_price = 99 WHERE order_id = 'o1' AND line_no = 1")
    sync(run_sync)
    assert rejects(db) == {'["o1", 1]': "line changed after it was sent: not sent again"}
    set_status(db, "acct-1", "o1", "REVERSED")
    summary = sync(run_sync)
    assert summary.objects_sent == 3
    got = purchases(emulator, "acct-1")
    assert revenue(got) == 0
    negatives = [p for p in got if p["price"] < 0]
    assert sorted((p["product_id"], p["quantity"], p["price"]) for p in negatives) == [
        ("A", 20, -3.25),
        ("A", 100, -3.25),
        ("B", 1, -40.0),
    ]
    assert all(p["properties"]["reversal"] is True for p in negatives)
    assert {p["properties"]["reversal_reason"] for p in negatives} == {"REVERSED"}
    with db.connection() as conn:
        reversed_at = conn.execute("SELECT reversed_at FROM orders WHERE id = 'o1'").fetchone()[0]
    assert negatives[0]["time"].startswith(reversed_at.astimezone().strftime("%Y-%m-%d"))

    set_status(db, "acct-1", "o1", "CANCELLED")  # already reversed: nothing more
    assert sync(run_sync).objects_sent == 0
    assert len(purchases(emulator, "acct-1")) == 6


def test_an_order_never_sent_sends_nothing_when_reversed_or_cancelled(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")])
    add_order(db, "acct-1", "o2", [("B", 1, "10.00")])
    sync(run_sync)
    set_status(db, "acct-1", "o1", "FULFILLED")
    set_status(db, "acct-1", "o1", "REVERSED")  # fulfilled and reversed between two syncs
    set_status(db, "acct-1", "o2", "CANCELLED")
    summary = sync(run_sync)
    assert summary.objects_sent == 0
    assert summary.skip_reasons == {"order reversed or cancelled before it was sent": 2}
    assert purchases(emulator, "acct-1") == []
    assert ledger(db, "acct-1") == {}


def test_a_cancellation_after_fulfilment_and_a_deleted_order_are_reversed(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    add_order(db, "acct-1", "o2", [("B", 2, "7.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "CANCELLED")
    with db.connection() as conn:
        conn.execute("DELETE FROM order_items WHERE order_id = 'o2'")
        conn.execute("DELETE FROM orders WHERE id = 'o2'")
    sync(run_sync)
    assert revenue(purchases(emulator, "acct-1")) == 0
    reasons = {k: v[-1] for k, v in ledger(db, "acct-1").items() if k[2] == "-"}
    assert reasons == {("o1", 1, "-"): "CANCELLED", ("o2", 1, "-"): "ORDER_DELETED"}


def test_held_orders_are_recorded_and_sent_once_fixed(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "held", [("A", 1, "10.00"), ("B", -1, "5.00")], status="FULFILLED")
    add_order(db, "acct-1", "goes", [("C", 1, "10.00"), ("D", 0, "5.00")], status="FULFILLED")
    add_order(db, "acct-1", "money", [("E", 1, "10.00")], currency="ABC", status="FULFILLED")
    add_order(db, "acct-1", "nan", [("F", 1, "NaN")], status="FULFILLED")
    add_order(db, "acct-1", "long", [("G" * 256, 1, "1.00")], status="FULFILLED")

    summary = sync(run_sync)
    assert [p["product_id"] for p in purchases(emulator, "acct-1")] == ["C"]
    assert rejects(db) == {
        '["held", 2]': "quantity is below 1",
        "held": "order held: line(s) 2 cannot be sent and carry revenue; nothing of it is sent",
        '["goes", 2]': "quantity is below 1",
        "money": "currency is not an ISO 4217 code: order held",
        '["nan", 1]': "unit price is not a finite number",
        "nan": "order held: line(s) 1 cannot be sent and carry revenue; nothing of it is sent",
        '["long", 1]': "sku is longer than 255 characters",
        "long": "order held: line(s) 1 cannot be sent and carry revenue; nothing of it is sent",
    }
    assert summary.metrics["orders held"] == 4
    assert summary.rejected == 8

    with db.connection() as conn:  # fixing the line sends the whole order
        conn.execute("UPDATE order_items SET quantity = 1 WHERE order_id = 'held' AND line_no = 2")
    sync(run_sync)
    assert sorted(p["product_id"] for p in purchases(emulator, "acct-1")) == ["A", "B", "C"]


def test_purchases_of_deleted_customers_are_not_sent(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=3)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    add_order(db, "acct-1", "o2", [("B", 1, "10.00")], customer="c2", status="FULFILLED")
    add_order(db, "acct-1", "o3", [("C", 1, "10.00")], customer="c3", status="FULFILLED")
    add_order(db, "acct-1", "o4", [("D", 1, "10.00")], customer="nobody", status="FULFILLED")
    with db.connection() as conn:
        conn.execute("UPDATE customers SET deleted_at = now() WHERE id = 'c2'")
    summary = sync(run_sync)
    assert summary.skip_reasons == {"customer deleted": 1}
    assert rejects(db) == {"o4": "customer not found"}
    assert emulator.profile("acct-1", "c2") is None

    # c3 is deleted after its purchase was sent: its order's reversal is not sent either
    with db.connection() as conn:
        conn.execute("DELETE FROM customers WHERE id = 'c3'")
    set_status(db, "acct-1", "o3", "REVERSED")
    sync(run_sync)
    assert len(purchases(emulator, "acct-1", "c3")) == 1
    assert ("o3", 1, "-") not in ledger(db, "acct-1")


def test_refulfilment_after_a_reversal_is_recorded_and_not_sent(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "PENDING")  # leaves FULFILLED and comes back: nothing new
    sync(run_sync)
    set_status(db, "acct-1", "o1", "FULFILLED")
    sync(run_sync)
    assert len(purchases(emulator, "acct-1")) == 1
    set_status(db, "acct-1", "o1", "REVERSED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "FULFILLED")
    sync(run_sync)
    assert len(purchases(emulator, "acct-1")) == 2
    assert rejects(db) == {"o1": "order fulfilled again after its reversal was sent: not sent again"}


# -- crashes between send and commit ------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing catches it."""


class DeadTransport(httpx.AsyncBaseTransport):
    """The process dies as the first request leaves: nothing reaches Braze."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise Crash


def _run(transport=None):
    db = Database(os.environ["MASIVO_DATABASE_URL"])
    with db.connection() as conn:
        (account,) = load_accounts(conn, ["acct-1"])
    return AccountRun(db, PURCHASES, account, transport=transport)


def deliver_then_die(transport=None) -> None:
    settle(Database(os.environ["MASIVO_DATABASE_URL"]))

    async def go() -> None:
        async with _run(transport) as run:
            batch = run.next_batch()
            await run.deliver(batch, run.transform(run.validate(run.extract(batch))))
            # the process dies here: no commit

    asyncio.run(go())


def test_crash_after_delivery_then_a_reversal_still_balances(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 150, "2.00")], status="FULFILLED")
    deliver_then_die()
    assert revenue(purchases(emulator, "acct-1")) == Decimal("300.00")
    assert ledger(db, "acct-1") == {}

    set_status(db, "acct-1", "o1", "REVERSED")  # the order moves on before the batch is resumed
    resumed = sync(run_sync)
    assert resumed.possibly_duplicated == 0
    got = purchases(emulator, "acct-1")
    assert Counter(p["price"] for p in got) == {2.0: 2, -2.0: 2}  # each part once, each reversal once
    assert revenue(got) == 0
    assert set(ledger(db, "acct-1")) == {("o1", 1, "+"), ("o1", 1, "-")}
    assert sync(run_sync).objects_sent == 0


def test_crash_before_anything_landed_then_a_reversal_still_balances(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    with pytest.raises(Crash):
        deliver_then_die(DeadTransport())
    assert purchases(emulator, "acct-1") == []
    set_status(db, "acct-1", "o1", "CANCELLED")
    resumed = sync(run_sync)
    # the purchase may have landed (the answer was lost): it is re-sent, counted, and reversed
    assert resumed.possibly_duplicated == 1
    assert revenue(purchases(emulator, "acct-1")) == 0
    assert set(ledger(db, "acct-1")) == {("o1", 1, "+"), ("o1", 1, "-")}


def test_crash_after_a_reversal_was_delivered_then_refulfilment_still_balances(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "REVERSED")
    deliver_then_die()
    set_status(db, "acct-1", "o1", "FULFILLED")
    sync(run_sync)
    assert revenue(purchases(emulator, "acct-1")) == 0  # what Braze has: the reversal landed
    assert ledger(db, "acct-1")[("o1", 1, "-")][-1] == "REVERSED"
    assert rejects(db) == {"o1": "order fulfilled again after its reversal was sent: not sent again"}


def test_toggle_off_account_is_not_run(make_account, db) -> None:
    make_account("acct-off", customers=1, sync_purchases=False)
    with db.connection() as conn:
        (account,) = load_accounts(conn, ["acct-off"])
    assert not account.is_on(PURCHASES.toggle)


# -- operations: retry-rejected and sync --full ---------------------------------------------------


def test_retry_rejected_sends_what_was_held_once_fixed(make_account, run_sync, emulator, db):
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.requeue import retry_rejected

    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "a/b", [("A", 1, "10.00"), ("B", 1, "NaN")], status="FULFILLED")
    add_order(db, "acct-1", "late", [("C", 1, "5.00")], customer="c9", status="FULFILLED")
    sync(run_sync)
    assert set(rejects(db)) == {'["a/b", 2]', "a/b", "late"}
    with db.connection() as conn:
        # a fix to the order is a change: the next run reads it again by itself
        conn.execute("UPDATE order_items SET unit_price = 1 WHERE order_id = 'a/b' AND line_no = 2")
        # the customer arriving later is not a change to the order: that one needs retry-rejected
        conn.execute("INSERT INTO customers (account_id, id) VALUES ('acct-1', 'c9')")
    assert sync(run_sync).objects_sent == 2
    assert revenue(purchases(emulator, "acct-1")) == Decimal("11.00")

    assert retry_rejected(db, ENTITIES, entity="purchases") == {("acct-1", "purchases"): 3}
    summary = sync(run_sync)
    assert (summary.rows_read, summary.objects_sent, summary.rejected) == (2, 1, 0)  # a/b: already sent
    assert revenue(purchases(emulator, "acct-1", "c9")) == Decimal("5.00")


def test_full_resync_never_resends_what_was_sent_unless_asked(make_account, run_sync, emulator, db):
    from masivo_braze_sync.requeue import full_resync

    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 150, "1.00")], status="FULFILLED")
    add_order(db, "acct-1", "o2", [("B", 1, "9.00")], status="FULFILLED")
    add_order(db, "acct-1", "o3", [("C", 1, "4.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o2", "REVERSED")
    sync(run_sync)
    assert full_resync(db, PURCHASES, "acct-1") == 3
    assert sync(run_sync).objects_sent == 0

    emulator.reset()  # a new, empty workspace: send the account's current revenue again
    assert full_resync(db, PURCHASES, "acct-1", resend=True) == 3
    summary = sync(run_sync)
    assert summary.objects_sent == 3  # o1 in two parts, o3; o2 is reversed: nothing
    assert revenue(purchases(emulator, "acct-1")) == Decimal("154.00")
    assert set(ledger(db, "acct-1")) == {("o1", 1, "+"), ("o3", 1, "+")}


def test_every_recorded_key_leads_back_to_its_order() -> None:
    from masivo_braze_sync.entities.purchases import line_key, purchase_key

    for order_id in ("o1", "a/b/3", 'we"ird, [id]', "x/1/+/0"):
        keys = [order_id, line_key(order_id, 2), purchase_key(order_id, 2, "-", 11)]
        entries = PURCHASES.requeue_entries(keys)
        assert entries[1:] == [("orders", order_id)] * 2
    assert PURCHASES.requeue_entries(["o1"]) == [("orders", "o1")]


def test_each_part_of_a_split_line_has_its_own_identity(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("sku-1", 250, "2.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "REVERSED")
    sync(run_sync)
    got = purchases(emulator, "acct-1")
    assert [p["quantity"] for p in got] == [100, 100, 50, 100, 100, 50]
    ids = [p["properties"]["purchase_id"] for p in got]
    assert ids == ["o1/1/+/0", "o1/1/+/1", "o1/1/+/2", "o1/1/-/0", "o1/1/-/1", "o1/1/-/2"]
