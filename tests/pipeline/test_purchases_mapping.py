"""The purchases mapping without a database: split, keys, held orders, reversals, refulfilment, resume."""

from __future__ import annotations

from decimal import Decimal

import orjson
import polars as pl
import pytest

from masivo_braze_sync.entities.base import AccountContext
from masivo_braze_sync.entities.purchases import PURCHASES, parse_key, purchase_key, split_quantity

CTX = AccountContext("acct-1", "USD")
T_FULFIL = "2026-11-29T12:30:05.123Z"
T_REVERSE = "2026-11-30T08:00:00.000Z"


def line(n: int = 1, **kw) -> dict:
    return {"line_no": n, "sku": f"SKU-{n}", "name": f"Product {n}", "quantity": 1, "unit_price": "10.00"} | kw


def sent(n: int, sign: str, *, price: str, split: dict, sku: str | None = None, currency: str = "USD") -> dict:
    return {
        "line_no": n,
        "sign": sign,
        "customer_id": "c1",
        "product_id": sku or f"SKU-{n}",
        "currency": currency,
        "unit_price": price,
        "split": split,
        "time": T_FULFIL,
    }


def order(*, lines=(), sent=(), prior=None, **kw) -> dict:
    base = {
        "key": "o1",
        "present": True,
        "customer_id": "c1",
        "status": "FULFILLED",
        "currency": None,
        "fulfilled_at": T_FULFIL,
        "reversed_at": None,
        "cancelled_at": None,
        "updated_at": T_FULFIL,
        "deleted_at": T_REVERSE,
        "read_at": T_REVERSE,
        "customer_state": "active",
        "lines": orjson.dumps(list(lines)).decode() if lines else None,
        "sent": orjson.dumps(list(sent)).decode() if sent else None,
        "prior": orjson.dumps(prior).decode() if prior else None,
    }
    return base | kw


SCHEMA = {k: pl.String for k in order()} | {"present": pl.Boolean}


def run(*rows: dict, ctx: AccountContext = CTX):
    frame = pl.DataFrame(list(rows), schema=SCHEMA)
    valid = PURCHASES.validate(frame, ctx)
    out = PURCHASES.transform(valid.frame, ctx)
    for reason, n in valid.skipped.items():
        out.skipped[reason] = out.skipped.get(reason, 0) + n
    rejected = dict(
        zip(
            pl.concat([valid.rejected, out.rejected])["key"].to_list(),
            pl.concat([valid.rejected, out.rejected])["reason"].to_list(),
            strict=True,
        )
    )
    bodies = {k: orjson.loads(b) for k, b in zip(out.frame["key"], out.frame["body"], strict=True)}
    return bodies, rejected, out


def test_split_and_keys() -> None:
    assert split_quantity(1) == [1]
    assert split_quantity(100) == [100]
    assert split_quantity(250) == [100, 100, 50]
    assert split_quantity(300) == [100, 100, 100]
    assert parse_key(purchase_key("a/b/7", 3, "-", 2)) == ("a/b/7", 3, "-", 2)


def test_a_fulfilled_line_becomes_one_purchase_linked_to_its_order() -> None:
    raw = line(1, quantity=3, unit_price="19.99", properties={"size": {"eu": 42}, "order_id": "x"})
    bodies, rejected, out = run(order(lines=[raw]))
    assert rejected == {}
    assert bodies == {
        "o1/1/+/0": {
            "external_id": "c1",
            "product_id": "SKU-1",
            "currency": "USD",
            "price": 19.99,
            "quantity": 3,
            "time": T_FULFIL,
            "properties": {
                "order_id": "o1",
                "line_no": 1,
                "product_name": "Product 1",
                "size_eu": 42,
                "line_order_id": "x",  # the line's own key never overrides the link back
                "purchase_id": "o1/1/+/0",
            },
        }
    }
    assert out.state["sign"].to_list() == ["+"]
    assert out.metrics == {"purchases": 1}


def test_the_order_currency_wins_over_the_accounts() -> None:
    bodies, _, _ = run(order(lines=[line()], currency="eur"))
    assert bodies["o1/1/+/0"]["currency"] == "EUR"
    bodies, _, _ = run(order(lines=[line()]), ctx=AccountContext("acct-1", "MXN"))
    assert bodies["o1/1/+/0"]["currency"] == "MXN"


def test_a_quantity_over_100_is_split_into_purchases_summing_to_it() -> None:
    bodies, _, _ = run(order(lines=[line(1, quantity=250, unit_price="2.50")]))
    assert {k: b["quantity"] for k, b in bodies.items()} == {"o1/1/+/0": 100, "o1/1/+/1": 100, "o1/1/+/2": 50}
    assert {b["price"] for b in bodies.values()} == {2.5}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"quantity": -2}, "quantity is below 1"),
        ({"quantity": None}, "quantity is missing"),
        ({"unit_price": None}, "unit price is missing"),
        ({"unit_price": "NaN"}, "unit price is not a finite number"),
        ({"sku": "s" * 256}, "sku is longer than 255 characters"),
        ({"sku": None}, "sku is empty"),
        ({"name": "n" * 256}, "product name is longer than 255 characters"),
        ({"properties": {"note": "x" * 300}}, "property 'note' is longer than 255 characters"),
        ({"quantity": 100_001}, "quantity is over 100000 (more than 1000 purchases)"),
    ],
)
def test_a_line_that_breaks_a_rule_and_carries_revenue_holds_the_whole_order(bad: dict, reason: str) -> None:
    bodies, rejected, out = run(order(lines=[line(1), line(2) | bad, line(3)]))
    assert bodies == {}
    assert rejected == {
        '["o1", 2]': reason,
        "o1": "order held: line(s) 2 cannot be sent and carry revenue; nothing of it is sent",
    }
    assert out.state.is_empty()
    assert out.metrics == {"orders held": 1}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"quantity": 0}, "quantity is below 1"),
        ({"quantity": 0, "unit_price": "NaN"}, "quantity is below 1"),
        ({"unit_price": "0.00", "sku": "s" * 300}, "sku is longer than 255 characters"),
    ],
)
def test_a_rejected_line_without_revenue_does_not_hold_the_rest(bad: dict, reason: str) -> None:
    bodies, rejected, _ = run(order(lines=[line(1), line(2) | bad]))
    assert set(bodies) == {"o1/1/+/0"}
    assert rejected == {'["o1", 2]': reason}


def test_a_currency_that_is_not_iso_4217_holds_the_order() -> None:
    bodies, rejected, _ = run(order(lines=[line()], currency="XYZ"))
    assert bodies == {}
    assert rejected == {"o1": "currency is not an ISO 4217 code: order held"}


def test_order_level_skips_and_rejects() -> None:
    rows = [
        order(key="pending", status="PENDING", lines=[line()]),
        order(key="never-sent", status="REVERSED", lines=[line()]),
        order(key="cancelled", status="CANCELLED", lines=[line()]),
        order(key="gone", present=False, customer_id=None, customer_state="missing"),
        order(key="deleted-customer", customer_state="deleted", lines=[line()]),
        order(key="unknown-customer", customer_state="missing", lines=[line()]),
        order(key="o" * 256, lines=[line()]),
    ]
    bodies, rejected, out = run(*rows)
    assert bodies == {}
    assert out.skipped == {
        "order not fulfilled": 1,
        "order reversed or cancelled before it was sent": 2,
        "order deleted before it was sent": 1,
        "customer deleted": 1,
    }
    assert rejected == {"unknown-customer": "customer not found", "o" * 256: "order id is longer than 255 characters"}


def test_a_reversal_negates_exactly_what_was_sent_not_the_current_line() -> None:
    # the line was edited after its purchase was sent: the reversal uses the ledger's values
    edited = line(1, quantity=7, unit_price="99.00", sku="NEW")
    ledger = [sent(1, "+", price="2.50", split={"0": 100, "1": 20}, sku="OLD", currency="EUR")]
    bodies, rejected, out = run(
        order(status="REVERSED", reversed_at=T_REVERSE, lines=[edited, line(2, quantity=5)], sent=ledger)
    )
    assert rejected == {}
    assert {k: (b["product_id"], b["currency"], b["price"], b["quantity"]) for k, b in bodies.items()} == {
        "o1/1/-/0": ("OLD", "EUR", -2.5, 100),
        "o1/1/-/1": ("OLD", "EUR", -2.5, 20),
    }  # line 2 was never sent: nothing to reverse
    assert bodies["o1/1/-/0"]["time"] == T_REVERSE
    assert bodies["o1/1/-/0"]["properties"] == {
        "order_id": "o1",
        "line_no": 1,
        "reversal": True,
        "reversal_reason": "REVERSED",
        "original_time": T_FULFIL,
        "purchase_id": "o1/1/-/0",
    }
    assert set(out.state["unit_price"].to_list()) == {"-2.50"}


def test_a_reversal_is_sent_once() -> None:
    ledger = [sent(1, "+", price="3.00", split={"0": 1}), sent(1, "-", price="-3.00", split={"0": 1})]
    bodies, rejected, out = run(order(status="CANCELLED", lines=[line()], sent=ledger))
    assert (bodies, rejected, out.skipped) == ({}, {}, {"reversal already sent": 1})


def test_a_sent_order_is_not_sent_again_and_an_edit_after_sending_is_recorded() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1})]
    bodies, rejected, out = run(order(lines=[line()], sent=ledger))
    assert (bodies, rejected, out.skipped) == ({}, {}, {"order already sent": 1})
    bodies, rejected, _ = run(order(lines=[line(quantity=2)], sent=ledger))
    assert bodies == {}
    assert rejected == {'["o1", 1]': "line changed after it was sent: not sent again"}


def test_a_line_added_to_a_sent_order_is_sent_and_a_deleted_one_is_reversed() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1})]
    bodies, _, _ = run(order(lines=[line(2)], sent=ledger))
    assert set(bodies) == {"o1/2/+/0", "o1/1/-/0"}
    assert bodies["o1/1/-/0"]["properties"]["reversal_reason"] == "LINE_DELETED"


def test_a_deleted_order_that_was_sent_is_reversed() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1})]
    bodies, _, _ = run(order(present=False, status=None, lines=None, sent=ledger))
    assert bodies["o1/1/-/0"]["properties"]["reversal_reason"] == "ORDER_DELETED"
    assert bodies["o1/1/-/0"]["time"] == T_REVERSE


def test_refulfilment_after_a_reversal_is_not_sent_and_is_recorded() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1}), sent(1, "-", price="-10.00", split={"0": 1})]
    bodies, rejected, _ = run(order(lines=[line()], sent=ledger))
    assert bodies == {}
    assert rejected == {"o1": "order fulfilled again after its reversal was sent: not sent again"}


def test_a_pending_order_that_was_sent_waits() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1})]
    bodies, rejected, out = run(order(status="PENDING", lines=[line()], sent=ledger))
    assert (bodies, rejected, out.skipped) == ({}, {}, {"order not fulfilled": 1})


def test_a_resumed_batch_rebuilds_what_an_interrupted_attempt_sent_even_after_a_reversal() -> None:
    # the interrupted attempt delivered part 0 and had part 1 in flight; then the order was reversed
    prior = {"o1/1/+/0": "landed", "o1/1/+/1": "maybe", "o1/1/+/2": "planned", "o1/2/+/0": "refused"}
    rows = order(status="REVERSED", reversed_at=T_REVERSE, lines=[line(1, quantity=250), line(2)], prior=prior)
    bodies, rejected, out = run(rows)
    assert rejected == {}
    # the same keys again (the pipeline skips the delivered one), and the reversal of those two only
    assert sorted(bodies) == ["o1/1/+/0", "o1/1/+/1", "o1/1/-/0", "o1/1/-/1"]
    assert [b["price"] for k, b in sorted(bodies.items())] == [10.0, 10.0, -10.0, -10.0]
    state = out.state.sort("key")
    assert state["key"].to_list() == sorted(bodies)


def test_a_resumed_batch_of_a_still_fulfilled_order_sends_every_part() -> None:
    prior = {"o1/1/+/0": "landed", "o1/1/+/1": "planned", "o1/1/+/2": "refused"}
    bodies, _, _ = run(order(lines=[line(1, quantity=250)], prior=prior))
    assert sorted(bodies) == ["o1/1/+/0", "o1/1/+/1"]  # refused by Braze: neither resent nor recorded


def test_a_resumed_reversal_is_recorded_even_if_the_order_was_fulfilled_again() -> None:
    ledger = [sent(1, "+", price="10.00", split={"0": 1})]
    bodies, rejected, _ = run(order(lines=[line()], sent=ledger, prior={"o1/1/-/0": "landed"}))
    assert sorted(bodies) == ["o1/1/-/0"]
    assert rejected == {"o1": "order fulfilled again after its reversal was sent: not sent again"}


def test_revenue_of_the_payload_is_exact_in_cents() -> None:
    bodies, _, _ = run(order(lines=[line(1, quantity=3, unit_price="0.10"), line(2, unit_price="999999999999.99")]))
    total = sum(Decimal(repr(b["price"])) * b["quantity"] for b in bodies.values())
    assert total == Decimal("0.30") + Decimal("999999999999.99")
