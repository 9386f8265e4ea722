"""The purchases invariant over random order histories (hypothesis), against the emulator.

For every customer, the revenue Braze received (sum of price * quantity) equals the customer's
Masivo revenue from orders currently FULFILLED, however the histories interleave with syncs and
with crashes between send and commit; and each line's purchase and reversal land at most once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from decimal import Decimal

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.db import Database
from masivo_braze_sync.entities import PURCHASES
from masivo_braze_sync.pipeline import AccountRun
from tests.capture_helpers import braze_revenue, masivo_revenue, settle

CUSTOMERS = ("c1", "c2")
PATHS = (
    ("FULFILLED", "REVERSED"),
    ("CANCELLED",),
    ("FULFILLED", "CANCELLED"),
    ("FULFILLED",),
    (),
)
STAMP = {"FULFILLED": "fulfilled_at", "REVERSED": "reversed_at", "CANCELLED": "cancelled_at"}

quantities = st.one_of(st.sampled_from([0, 1, 100, 101, 250]), st.integers(1, 30))
prices = st.integers(-500, 50_000).map(lambda cents: Decimal(cents) / 100)
lines = st.lists(st.tuples(quantities, prices), min_size=1, max_size=3)
orders = st.lists(
    st.fixed_dictionaries(
        {
            "customer": st.sampled_from(CUSTOMERS),
            "currency": st.sampled_from([None, "EUR"]),
            "lines": lines,
            "path": st.sampled_from(PATHS),
        }
    ),
    min_size=1,
    max_size=4,
)
#: a history is a few rounds: edit pending lines, move some orders one status on, then sync, crash
#: between send and commit, or do nothing
rounds = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 3), st.integers(1, 150)), max_size=1),
        st.lists(st.integers(0, 3), max_size=3),
        st.sampled_from(["sync", "crash", "none"]),
    ),
    max_size=7,
)
ONE_LINE = [{"customer": "c1", "currency": None, "lines": [(150, Decimal("2.00"))], "path": PATHS[0]}]


def crash_between_send_and_commit(db: Database, account_id: str) -> None:
    """Deliver the next batch, then 'die' before the commit (like tests/pipeline/test_crash_recovery.py)."""
    with db.connection() as conn:
        (account,) = load_accounts(conn, [account_id])

    async def go() -> None:
        async with AccountRun(db, PURCHASES, account) as run:
            batch = run.next_batch()
            if batch is not None:
                await run.deliver(batch, run.transform(run.validate(run.extract(batch))))

    asyncio.run(go())


def check(db: Database, emulator, account: str) -> None:
    braze, masivo = braze_revenue(emulator, account), masivo_revenue(db, account)
    for customer in CUSTOMERS:
        assert braze.get(customer, Decimal(0)) == masivo.get(customer, Decimal(0)), customer
    # at most once: Braze holds exactly the parts the ledger says were sent, each once
    with db.connection() as conn:
        sides = conn.execute(
            "SELECT order_id, line_no, sign, split, unit_price FROM braze_sync.purchase_lines WHERE account_id = %s",
            (account,),
        ).fetchall()
    expected = Counter()
    for order_id, line_no, sign, split, unit_price in sides:
        for quantity in split.values():
            expected[(order_id, line_no, sign, quantity, unit_price)] += 1
    got = Counter(
        (
            p["properties"]["order_id"],
            p["properties"]["line_no"],
            "-" if p["properties"].get("reversal") else "+",
            p["quantity"],
            Decimal(repr(p["price"])),
        )
        for profile in emulator.profiles(account).values()
        for p in profile.purchases
    )
    assert got == expected


def play(db, run_sync, account: str, orders: list[dict], rounds: list[tuple]) -> None:
    """Seed `orders` for a fresh `account` and play `rounds` (edits, advances, then a sync, a crash
    between send and commit, or nothing), ending with a sync."""
    with db.connection() as conn:
        for c in CUSTOMERS:
            conn.execute("INSERT INTO customers (account_id, id) VALUES (%s, %s)", (account, c))
        for n, o in enumerate(orders):
            conn.execute(
                "INSERT INTO orders (account_id, id, customer_id, status, currency) VALUES (%s, %s, %s, 'PENDING', %s)",
                (account, f"o{n}", o["customer"], o["currency"]),
            )
            for line_no, (quantity, price) in enumerate(o["lines"], start=1):
                conn.execute(
                    "INSERT INTO order_items (account_id, order_id, line_no, sku, name, quantity, unit_price) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (account, f"o{n}", line_no, f"SKU-{line_no}", "Product", quantity, price),
                )
    position = [0] * len(orders)
    for edits, advances, action in [*rounds, ([], [], "sync")]:
        with db.connection() as conn:
            for i, quantity in edits:
                if i < len(orders) and position[i] == 0:  # lines change freely before fulfilment
                    conn.execute(
                        "UPDATE order_items SET quantity = %s WHERE account_id = %s AND order_id = %s AND line_no = 1",
                        (quantity, account, f"o{i}"),
                    )
            for i in advances:
                if i < len(orders) and position[i] < len(orders[i]["path"]):
                    status = orders[i]["path"][position[i]]
                    position[i] += 1
                    conn.execute(
                        f"UPDATE orders SET status = %s, {STAMP[status]} = now(), updated_at = now() "
                        "WHERE account_id = %s AND id = %s",
                        (status, account, f"o{i}"),
                    )
        if action != "none":
            settle(db, account)
        if action == "sync":
            assert run_sync(account, "purchases").possibly_duplicated == 0
        elif action == "crash":
            crash_between_send_and_commit(db, account)


def test_braze_revenue_equals_masivo_fulfilled_revenue_over_random_histories(make_account, run_sync, emulator, db):
    accounts = itertools.count(1)

    @settings(
        max_examples=25,
        deadline=None,
        # each example runs several syncs: shrinking a failure would outlast the test timeout
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(orders=orders, rounds=rounds)
    # always: a crash after the purchase landed, then the order is reversed before the resume
    @example(orders=ONE_LINE, rounds=[([], [0], "crash"), ([], [0], "sync")])
    # ... the reversal lands, crash, and a second crash on the resumed batch
    @example(orders=ONE_LINE, rounds=[([], [0], "sync"), ([], [0], "crash"), ([], [], "crash"), ([], [], "sync")])
    # fulfilled and cancelled between two syncs; cancelled while a crashed batch waits
    @example(
        orders=[ONE_LINE[0] | {"path": PATHS[2]}, ONE_LINE[0] | {"path": PATHS[2], "customer": "c2"}],
        rounds=[([], [0], "none"), ([], [0, 1], "crash"), ([], [1], "sync")],
    )
    def history(orders: list[dict], rounds: list[tuple]) -> None:
        account = make_account(f"inv-{next(accounts)}")  # a fresh account (and workspace) per example
        play(db, run_sync, account, orders, rounds)
        check(db, emulator, account)
        settle(db, account)
        assert run_sync(account, "purchases").objects_sent == 0  # and nothing is left to send

    history()


def test_sync_all_holds_the_invariant_with_every_entity_running(make_account, run_sync, emulator, db):
    """The other entities running on the same account never disturb purchases."""
    from masivo_braze_sync.entities import ENTITIES

    account = make_account("acct-all", customers=2)
    with db.connection() as conn:
        for n, customer in enumerate(["c1", "c2", "c1"]):  # then: o1 cancelled, o2 reversed
            conn.execute(
                "INSERT INTO orders (account_id, id, customer_id, status, fulfilled_at) VALUES (%s, %s, %s, %s, now())",
                (account, f"o{n}", customer, "FULFILLED"),
            )
            conn.execute(
                "INSERT INTO order_items (account_id, order_id, line_no, sku, quantity, unit_price) "
                "VALUES (%s, %s, 1, 'S', 120, 4.05)",
                (account, f"o{n}"),
            )
    for name in ENTITIES:
        run_sync(account, name)
    with db.connection() as conn:
        conn.execute(
            "UPDATE orders SET status = 'CANCELLED', cancelled_at = now() WHERE account_id = %s AND id = 'o1'",
            (account,),
        )
        conn.execute(
            "UPDATE orders SET status = 'REVERSED', reversed_at = now() WHERE account_id = %s AND id = 'o2'",
            (account,),
        )
    for name in ENTITIES:
        run_sync(account, name)
    check(db, emulator, account)
    assert braze_revenue(emulator, account)["c1"] == Decimal("486.00")
