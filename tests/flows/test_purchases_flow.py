"""The purchases flow under Prefect: `sync purchases` and `sync all` keep Braze revenue equal to
Masivo's fulfilled revenue over randomized order histories; accounts stay isolated."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from app.cli import app
from flows.purchases import sync_purchases
from masivo_braze_sync.errors import AccountSyncFailed
from tests.capture_helpers import braze_revenue, masivo_revenue, settle

CUSTOMERS = ("c1", "c2", "c3")
PATHS = (("FULFILLED", "REVERSED"), ("CANCELLED",), ("FULFILLED", "CANCELLED"), ("FULFILLED",), ())
STAMP = {"FULFILLED": "fulfilled_at", "REVERSED": "reversed_at", "CANCELLED": "cancelled_at"}


def add_orders(db, account: str, rng: random.Random, n: int) -> list[tuple[str, ...]]:
    """n random orders (1-3 lines, quantities up to 250) for the account; returns their paths."""
    paths = []
    with db.connection() as conn:
        for i in range(n):
            conn.execute(
                "INSERT INTO orders (account_id, id, customer_id, status, currency) VALUES (%s, %s, %s, 'PENDING', %s)",
                (account, f"o{i}", rng.choice(CUSTOMERS), rng.choice([None, "EUR", "JPY"])),
            )
            for line_no in range(1, rng.randint(1, 3) + 1):
                conn.execute(
                    "INSERT INTO order_items (account_id, order_id, line_no, sku, name, quantity, unit_price) "
                    "VALUES (%s, %s, %s, %s, 'Product', %s, %s)",
                    (
                        account,
                        f"o{i}",
                        line_no,
                        f"SKU-{line_no}",
                        rng.choice([1, 2, 100, 101, 250]),
                        Decimal(rng.randint(-200, 20_000)) / 100,
                    ),
                )
            paths.append(rng.choice(PATHS))
    return paths


def advance(db, account: str, rng: random.Random, paths: list, position: list[int]) -> None:
    with db.connection() as conn:
        for i in rng.sample(range(len(paths)), k=len(paths) // 2):
            if position[i] < len(paths[i]):
                status = paths[i][position[i]]
                position[i] += 1
                conn.execute(
                    f"UPDATE orders SET status = %s, {STAMP[status]} = now(), updated_at = now() "
                    "WHERE account_id = %s AND id = %s",
                    (status, account, f"o{i}"),
                )


def assert_invariant(db, emulator, account: str) -> None:
    masivo, braze = masivo_revenue(db, account), braze_revenue(emulator, account)
    for customer in CUSTOMERS:
        assert braze.get(customer, Decimal(0)) == masivo.get(customer, Decimal(0)), (account, customer)


def test_sync_purchases_and_sync_all_hold_the_invariant_over_random_histories(
    prefect_api, make_account, emulator, db
) -> None:
    rng = random.Random(20261129)
    accounts = {a: None for a in ("shop-a", "shop-b")}
    for account in accounts:
        make_account(account, customers=len(CUSTOMERS))
        accounts[account] = (add_orders(db, account, rng, 6), [0] * 6)

    for round_no in range(4):
        for account, (paths, position) in accounts.items():
            advance(db, account, rng, paths, position)
        settle(db)
        command = ["sync", "purchases"] if round_no % 2 == 0 else ["sync", "all"]
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        assert "purchases: per-account summary" in result.output
        for account in accounts:
            assert_invariant(db, emulator, account)

    for account, (paths, position) in accounts.items():  # finish every history
        while any(p < len(path) for p, path in zip(position, paths, strict=True)):
            advance(db, account, rng, paths, position)
    settle(db)
    result = CliRunner().invoke(app, ["sync", "all"])
    assert result.exit_code == 0, result.output
    for account in accounts:
        assert_invariant(db, emulator, account)
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.batches WHERE status = 'open'").fetchone()[0] == 0


def test_each_account_runs_alone_and_a_failing_one_is_named(prefect_api, make_account, emulator, db) -> None:
    rng = random.Random(7)
    make_account("good", customers=len(CUSTOMERS))
    add_orders(db, "good", rng, 3)
    make_account("revoked", customers=len(CUSTOMERS), api_key="not-the-key")
    add_orders(db, "revoked", rng, 1)
    make_account("quiet", customers=len(CUSTOMERS), sync_purchases=False)
    add_orders(db, "quiet", rng, 1)
    with db.connection() as conn:
        conn.execute("UPDATE orders SET status = 'FULFILLED', fulfilled_at = now()")
    settle(db)

    with pytest.raises(AccountSyncFailed) as info:
        asyncio.run(sync_purchases())
    assert set(info.value.failures) == {"revoked"}
    assert "not-the-key" not in str(info.value.failures)
    by_account = {s.account_id: s for s in info.value.summaries}
    assert set(by_account) == {"good", "revoked"}  # the toggle-off account is not run
    assert by_account["good"].status == "ok"
    assert by_account["good"].objects_sent > 0
    assert_invariant(db, emulator, "good")
    assert emulator.profiles("quiet") == {}


def test_dry_run_prints_the_purchases_and_sends_nothing(prefect_api, make_account, emulator, db) -> None:
    make_account("acct-1", customers=1)
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO orders (account_id, id, customer_id, status, fulfilled_at) "
            "VALUES ('acct-1', 'o1', 'c1', 'FULFILLED', now())"
        )
        conn.execute(
            "INSERT INTO order_items (account_id, order_id, line_no, sku, quantity, unit_price) "
            "VALUES ('acct-1', 'o1', 1, 'SKU-9', 101, 3.10)"
        )
    settle(db)
    result = CliRunner().invoke(app, ["sync", "purchases", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"product_id":"SKU-9"' in result.output
    assert '"quantity":100' in result.output
    assert '"quantity":1,' in result.output
    assert emulator.stats("acct-1").requests == 0
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.purchase_lines").fetchone()[0] == 0
