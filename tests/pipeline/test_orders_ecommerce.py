"""Orders as eCommerce recommended events (`orders_as`): each mode on the same order history,
crashes between send and commit, and the account setting itself. Real Postgres, the emulator over
loopback HTTP, no Prefect."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import PURCHASES
from masivo_braze_sync.errors import ConfigurationError
from masivo_braze_sync.pipeline import AccountRun
from tests.pipeline.test_purchases_sync import (
    Crash,
    DeadTransport,
    add_order,
    deliver_then_die,
    purchases,
    rejects,
    revenue,
    set_status,
    sync,
)


def events(emulator, account: str = "acct-1", customer: str = "c1") -> list[dict]:
    """The eCommerce events Braze holds for a customer, in arrival order."""
    profile = emulator.profile(account, customer)
    return [] if profile is None else [e for e in profile.events if e["name"].startswith("ecommerce.")]


def brief(items: list[dict]) -> list[tuple]:
    """(event, order, total value, [(sku, quantity, price)], reason) of each event, sorted."""
    return sorted(
        (
            e["name"].removeprefix("ecommerce.order_"),
            e["properties"]["order_id"],
            e["properties"]["total_value"],
            [(p["product_id"], p["quantity"], p["price"]) for p in e["properties"]["products"]],
            e["properties"].get("cancel_reason") or e["properties"].get("metadata", {}).get("reason"),
        )
        for e in items
    )


def order_events(db, account: str = "acct-1") -> dict[str, str | None]:
    with db.connection() as conn:
        return dict(
            conn.execute("SELECT key, reason FROM braze_sync.order_events WHERE account_id = %s", (account,)).fetchall()
        )


def history(db, run_sync) -> list:
    """One order history for every mode; returns each run's summary."""
    add_order(db, "acct-1", "o1", [("A", 2, "10.00"), ("B", 1, "5.00")], status="FULFILLED")
    add_order(db, "acct-1", "o2", [("C", 1, "7.00")], status="FULFILLED")
    add_order(db, "acct-1", "o3", [("D", 3, "2.50")], status="FULFILLED")
    add_order(db, "acct-1", "o4", [("E", 150, "4.00")], status="FULFILLED")
    add_order(db, "acct-1", "o5", [("F", 1, "9.00")])  # pending, then cancelled: never sent
    runs = [sync(run_sync)]
    with db.connection() as conn:  # partial reversal: a sent line is deleted from a fulfilled order
        conn.execute("DELETE FROM order_items WHERE order_id = 'o1' AND line_no = 2")
    set_status(db, "acct-1", "o2", "CANCELLED")
    set_status(db, "acct-1", "o3", "REVERSED")
    set_status(db, "acct-1", "o5", "CANCELLED")
    with db.connection() as conn:  # a deleted order
        conn.execute("DELETE FROM order_items WHERE order_id = 'o4'")
        conn.execute("DELETE FROM orders WHERE id = 'o4'")
    runs.append(sync(run_sync))
    set_status(db, "acct-1", "o1", "REVERSED")  # full reversal of what is left
    set_status(db, "acct-1", "o3", "FULFILLED")  # re-fulfilled after its reversal: not sent again
    runs.append(sync(run_sync))
    runs.append(sync(run_sync))
    return runs


ECOMMERCE = [
    ("placed", "o1", 25.0, [("A", 2, 10.0), ("B", 1, 5.0)], None),
    ("placed", "o2", 7.0, [("C", 1, 7.0)], None),
    ("placed", "o3", 7.5, [("D", 3, 2.5)], None),
    ("placed", "o4", 600.0, [("E", 150, 4.0)], None),  # one product, whole quantity: no split of 100
    ("refunded", "o1", 5.0, [("B", 1, 5.0)], "LINE_DELETED"),
    ("refunded", "o1", 20.0, [("A", 2, 10.0)], "REVERSED"),
    ("cancelled", "o2", 7.0, [("C", 1, 7.0)], "CANCELLED"),
    ("refunded", "o3", 7.5, [("D", 3, 2.5)], "REVERSED"),
    ("cancelled", "o4", 600.0, [("E", 150, 4.0)], "ORDER_DELETED"),
]
LEDGER = {
    "o1/ecommerce.order_placed/1,2": None,
    "o1/ecommerce.order_refunded/2": "LINE_DELETED",
    "o1/ecommerce.order_refunded/1": "REVERSED",
    "o2/ecommerce.order_placed/1": None,
    "o2/ecommerce.order_cancelled/1": "CANCELLED",
    "o3/ecommerce.order_placed/1": None,
    "o3/ecommerce.order_refunded/1": "REVERSED",
    "o4/ecommerce.order_placed/1": None,
    "o4/ecommerce.order_cancelled/1": "ORDER_DELETED",
}


@pytest.mark.parametrize("orders_as", [None, "purchases", "ecommerce", "both"])
def test_each_mode_on_the_same_order_history(make_account, run_sync, emulator, db, orders_as) -> None:
    make_account("acct-1", customers=1, orders_as=orders_as)
    runs = history(db, run_sync)
    sends_purchases = orders_as in (None, "purchases", "both")
    sends_events = orders_as in ("ecommerce", "both")

    got = purchases(emulator, "acct-1")
    if sends_purchases:
        # every purchase reversed; o3's refulfilment is not sent again (as ever)
        assert revenue(got) == 0
        assert Counter(p["properties"].get("reversal_reason") for p in got if p["price"] < 0) == {
            "LINE_DELETED": 1,
            "REVERSED": 2,
            "CANCELLED": 1,
            "ORDER_DELETED": 2,  # 150 units: two purchases of 100 and 50
        }
    else:
        assert got == []
    if sends_events:
        items = events(emulator)
        assert brief(items) == sorted(ECOMMERCE)
        assert all(e["properties"]["source"] == "masivo" and e["properties"]["currency"] == "USD" for e in items)
        placed = next(e for e in items if e["name"] == "ecommerce.order_placed" and e["properties"]["order_id"] == "o1")
        assert placed["properties"]["products"][0] == {
            "product_id": "A",
            "product_name": "Product 1",
            "variant_id": "A",
            "quantity": 2,
            "price": 10.0,
            "metadata": {"line_no": 1},
        }
        assert order_events(db) == LEDGER
    else:
        assert events(emulator) == []
        assert order_events(db) == {}
    assert rejects(db) == {"o3": "order fulfilled again after its reversal was sent: not sent again"}
    assert emulator.stats("acct-1").rejected_objects == 0  # the emulator (Braze's schema) took every object
    assert runs[-1].objects_sent == 0  # nothing is sent twice
    assert all(r.possibly_duplicated == 0 and r.status == "ok" for r in runs)


def test_both_sends_an_orders_purchases_and_its_event_in_the_same_run(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="both")
    add_order(db, "acct-1", "o1", [{"sku": "A", "quantity": 1, "unit_price": "3.10", "properties": {"gift": True}}])
    set_status(db, "acct-1", "o1", "FULFILLED")
    summary = sync(run_sync)
    assert (summary.objects_sent, summary.requests) == (2, 1)
    (purchase,) = purchases(emulator, "acct-1")
    (event,) = events(emulator)
    assert purchase["properties"]["gift"] is True
    assert event["properties"]["products"][0]["metadata"] == {"line_no": 1, "gift": True}
    assert event["time"] == purchase["time"]


def test_an_order_sent_as_purchases_before_the_switch_is_never_refunded_as_an_event(
    make_account, run_sync, emulator, db
):
    make_account("acct-1", customers=1)
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    sync(run_sync)
    with db.connection() as conn:
        conn.execute("UPDATE braze_integrations SET orders_as = 'ecommerce' WHERE account_id = 'acct-1'")
    set_status(db, "acct-1", "o1", "REVERSED")
    summary = sync(run_sync)
    assert summary.objects_sent == 0
    assert summary.skip_reasons == {"order never placed as an eCommerce event": 1}
    assert events(emulator) == []  # no refund for an order never placed


def test_a_held_order_is_placed_once_fixed(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="ecommerce")
    add_order(
        db,
        "acct-1",
        "o1",
        [("A", 1, "10.00"), {"sku": "B", "quantity": 1, "unit_price": "1.00", "properties": {"a.b": 1}}],
        status="FULFILLED",
    )
    assert sync(run_sync).objects_sent == 0
    assert rejects(db) == {
        '["o1", 2]': "property 'a.b' has a '.', '$' or space (not allowed in eCommerce metadata)",
        "o1": "order held: line(s) 2 cannot be sent and carry revenue; nothing of it is sent",
    }
    with db.connection() as conn:
        conn.execute("UPDATE order_items SET properties = '{\"a_b\": 1}' WHERE order_id = 'o1' AND line_no = 2")
    sync(run_sync)
    assert brief(events(emulator)) == [("placed", "o1", 11.0, [("A", 1, 10.0), ("B", 1, 1.0)], None)]


def test_a_line_added_after_the_order_was_placed_is_recorded_not_placed_again(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="ecommerce")
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    sync(run_sync)
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO order_items (account_id, order_id, line_no, sku, quantity, unit_price) "
            "VALUES ('acct-1', 'o1', 2, 'B', 1, 3)"
        )
    assert sync(run_sync).objects_sent == 0
    assert rejects(db) == {'["o1", 2]': "line added after the order was placed: not sent as an eCommerce event"}
    set_status(db, "acct-1", "o1", "REVERSED")
    sync(run_sync)
    assert brief(events(emulator))[-1] == ("refunded", "o1", 10.0, [("A", 1, 10.0)], "REVERSED")


# -- crashes between send and commit ------------------------------------------------------------


@pytest.mark.parametrize("orders_as", ["ecommerce", "both"])
def test_crash_after_delivery_then_a_reversal_places_and_refunds_once(make_account, run_sync, emulator, db, orders_as):
    make_account("acct-1", customers=1, orders_as=orders_as)
    add_order(db, "acct-1", "o1", [("A", 150, "2.00")], status="FULFILLED")
    deliver_then_die()
    assert [e["name"] for e in events(emulator)] == ["ecommerce.order_placed"]
    assert order_events(db) == {}

    set_status(db, "acct-1", "o1", "REVERSED")  # the order moves on before the batch is resumed
    resumed = sync(run_sync)
    assert resumed.possibly_duplicated == 0
    assert brief(events(emulator)) == [
        ("placed", "o1", 300.0, [("A", 150, 2.0)], None),
        ("refunded", "o1", 300.0, [("A", 150, 2.0)], "REVERSED"),
    ]
    assert order_events(db) == {"o1/ecommerce.order_placed/1": None, "o1/ecommerce.order_refunded/1": "REVERSED"}
    if orders_as == "both":
        assert revenue(purchases(emulator, "acct-1")) == 0
    assert sync(run_sync).objects_sent == 0


def test_crash_before_anything_landed_then_a_cancellation(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="ecommerce")
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    with pytest.raises(Crash):
        deliver_then_die(DeadTransport())
    assert events(emulator) == []
    set_status(db, "acct-1", "o1", "CANCELLED")
    resumed = sync(run_sync)
    # the order_placed may have landed (the answer was lost): it is sent again, counted, and cancelled
    assert resumed.possibly_duplicated == 1
    assert [e["name"] for e in events(emulator)] == ["ecommerce.order_placed", "ecommerce.order_cancelled"]
    assert set(order_events(db)) == {"o1/ecommerce.order_placed/1", "o1/ecommerce.order_cancelled/1"}


def test_crash_after_a_refund_landed_then_refulfilment_is_recorded(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="ecommerce")
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    sync(run_sync)
    set_status(db, "acct-1", "o1", "REVERSED")
    deliver_then_die()
    set_status(db, "acct-1", "o1", "FULFILLED")
    sync(run_sync)
    assert [e["name"] for e in events(emulator)] == ["ecommerce.order_placed", "ecommerce.order_refunded"]
    assert order_events(db)["o1/ecommerce.order_refunded/1"] == "REVERSED"
    assert rejects(db) == {"o1": "order fulfilled again after its reversal was sent: not sent again"}


# -- the setting -------------------------------------------------------------------------------


def test_an_unknown_orders_as_fails_that_account_only_and_is_named(make_account, run_sync, emulator, db):
    make_account("acct-1", customers=1, orders_as="events")
    make_account("acct-2", customers=1, orders_as="both")
    add_order(db, "acct-1", "o1", [("A", 1, "10.00")], status="FULFILLED")
    add_order(db, "acct-2", "o2", [("A", 1, "10.00")], status="FULFILLED")
    with pytest.raises(ConfigurationError, match="account acct-1: orders_as 'events' is not one of"):
        sync(run_sync, "acct-1")
    assert sync(run_sync, "acct-2").objects_sent == 2
    with db.connection() as conn:
        status, error = conn.execute(
            "SELECT status, error FROM braze_sync.run_summaries WHERE account_id = 'acct-1'"
        ).fetchone()
    assert (status, error) == ("failed", "account acct-1: orders_as 'events' is not one of purchases, ecommerce, both")
    assert purchases(emulator, "acct-1") == []


def test_every_recorded_event_key_leads_back_to_its_order() -> None:
    from masivo_braze_sync.entities.ecommerce import event_key, parse_event_key

    for order_id in ("o1", "a/b/3", 'we"ird, [id]', "x/ecommerce.order_placed/1"):
        key = event_key(order_id, "refunded", [3, 1])
        assert parse_event_key(key) == (order_id, "refunded", (1, 3))
        assert PURCHASES.requeue_entries([key]) == [("orders", order_id)]


def test_dry_run_of_an_unknown_orders_as_is_refused(make_account, db) -> None:
    make_account("acct-1", customers=1, orders_as="Both")
    with db.connection() as conn:
        (account,) = load_accounts(conn, ["acct-1"])

    async def go() -> None:
        async with AccountRun(Database(db.url), PURCHASES, account, dry_run=True) as run:
            await run.run()

    with pytest.raises(ConfigurationError, match="orders_as 'Both'"):
        asyncio.run(go())


# -- the invariant with `both` ------------------------------------------------------------------


def check_events(db, emulator, account: str) -> None:
    """Each recorded event landed once (and nothing else did); per customer, placed - refunded -
    cancelled value = Masivo's revenue from orders currently FULFILLED."""
    from masivo_braze_sync.entities.ecommerce import parse_event_key
    from tests.capture_helpers import masivo_revenue

    with db.connection() as conn:
        rows = conn.execute("SELECT key FROM braze_sync.order_events WHERE account_id = %s", (account,)).fetchall()
    expected = Counter()
    for (key,) in rows:
        order_id, kind, nos = parse_event_key(key)
        expected[(kind, order_id, nos)] += 1
    got, net = Counter(), {}
    for customer, profile in emulator.profiles(account).items():
        for e in profile.events:
            p = e["properties"]
            kind = e["name"].removeprefix("ecommerce.order_")
            got[(kind, p["order_id"], tuple(sorted(x["metadata"]["line_no"] for x in p["products"])))] += 1
            sign = 1 if kind == "placed" else -1
            net[customer] = net.get(customer, Decimal(0)) + sign * Decimal(repr(p["total_value"]))
    assert got == expected
    masivo = masivo_revenue(db, account)
    for customer in set(net) | set(masivo):
        assert net.get(customer, Decimal(0)) == masivo.get(customer, Decimal(0)), customer


def test_both_holds_the_revenue_invariant_over_random_histories(make_account, run_sync, emulator, db):
    from tests.capture_helpers import settle
    from tests.pipeline.test_purchases_invariant import (
        ONE_LINE,
        PATHS,
        check,
        orders,
        play,
        rounds,
    )

    accounts = itertools.count(1)

    @settings(
        max_examples=12,
        deadline=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(orders=orders, rounds=rounds)
    # a crash after the order_placed landed, then the order is reversed before the resume
    @example(orders=ONE_LINE, rounds=[([], [0], "crash"), ([], [0], "sync")])
    # fulfilled and cancelled between two syncs; cancelled while a crashed batch waits
    @example(
        orders=[ONE_LINE[0] | {"path": PATHS[2]}, ONE_LINE[0] | {"path": PATHS[2], "customer": "c2"}],
        rounds=[([], [0], "none"), ([], [0, 1], "crash"), ([], [1], "sync")],
    )
    def history(orders: list[dict], rounds: list[tuple]) -> None:
        account = make_account(f"both-{next(accounts)}", orders_as="both")
        play(db, run_sync, account, orders, rounds)
        check(db, emulator, account)  # the purchases: Braze revenue = Masivo fulfilled revenue, at most once
        check_events(db, emulator, account)
        settle(db, account)
        assert run_sync(account, "purchases").objects_sent == 0

    history()
