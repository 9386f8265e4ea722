"""Masivo orders → Braze eCommerce recommended events (docs/braze.md#ecommerce-recommended-events).

The purchases entity reads each changed order once; with `orders_as` = `ecommerce` or `both` it
hands the order to `plan`, which adds the events the order still owes Braze, under one rule:
**each line is placed at most once and closed (refunded or cancelled) at most once**.

- `FULFILLED`, not placed yet: one `ecommerce.order_placed` for the whole order (not per line):
  `order_id`, `total_value` = the sum of quantity * unit price, `currency` (the order's, else the
  account's), `source` = `masivo`, `time` = `fulfilled_at`, and `products`: per line `product_id`
  = `variant_id` = sku (Masivo has no variant), `product_name` = the line's name (else the sku),
  `quantity` (whole: the eCommerce schema has no cap of 100), `price` = unit price, `metadata` =
  `line_no` and the line's own properties flattened (Braze takes custom data only in `metadata`).
  The lines are checked as for purchases; a line that cannot be sent and carries revenue holds
  the order. A line added after the order was placed is recorded, not sent (a second
  `order_placed` would count the order twice in Braze's "Total Orders").
- A line deleted from a placed, fulfilled order: `ecommerce.order_refunded` with that line
  (partial refund). `REVERSED`: `ecommerce.order_refunded` with every placed line not refunded
  yet. `CANCELLED`, or the order row deleted: `ecommerce.order_cancelled` with those lines and
  `cancel_reason` `CANCELLED` / `ORDER_DELETED` (Masivo stores no reason of its own). Values are
  the ledger's (what `order_placed` carried), never the current lines. An order never placed
  sends nothing; one fulfilled again after it was closed is recorded, not placed again.

Ledger: `braze_sync.order_events`, one row per event Braze accepted, written in the transaction
that moves the cursor. Keys are `<order id>/ecommerce.order_<placed|refunded|cancelled>/<line
nos>`: an event's lines are in its key, so a resumed batch rebuilds exactly the event an
interrupted attempt sent (the pipeline skips it if it landed, re-sends it if the answer was lost)
and records it even if the order moved on meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from masivo_braze_sync.braze.limits import BRAZE

if TYPE_CHECKING:
    from masivo_braze_sync.entities.purchases import Line, _Order, _Out

PLACED, REFUNDED, CANCELLED = "placed", "refunded", "cancelled"
EVENT_NAMES = {kind: f"ecommerce.order_{kind}" for kind in (PLACED, REFUNDED, CANCELLED)}
#: the required `source` property: where the event comes from
SOURCE = "masivo"
#: a ledger reason per whole-order closing (a deleted line is a partial refund)
WHOLE_ORDER = ("REVERSED", "CANCELLED", "ORDER_DELETED")
EVENT_KEY = re.compile(r"(.*)/ecommerce\.order_(placed|refunded|cancelled)/(-?[0-9]+(?:,-?[0-9]+)*)", re.DOTALL)
#: characters Braze refuses in the keys of nested properties (docs/braze.md#ecommerce-recommended-events)
BAD_NESTED_KEY = re.compile(r"[.$ ]")

# SQL the purchases extract adds for this module: what an interrupted attempt planned
# (from its `planned` CTE) and what the ledger holds, per order
PRIOR_CTE = r"""
eprior AS (
    SELECT substring(key FROM '^(.*)/ecommerce\.order_[a-z]+/[-0-9,]+$') AS order_id,
           jsonb_object_agg(key, CASE WHEN refused THEN 'refused' WHEN delivered THEN 'landed'
                                      WHEN maybe THEN 'maybe' ELSE 'planned' END) AS keys
    FROM planned
    WHERE key ~ '/ecommerce\.order_[a-z]+/[-0-9,]+$'
    GROUP BY 1
)"""


def sent_join(ts: Any) -> str:
    """The lateral join of an order's ledger rows (`es.events`, `es.customer_id`); `ts` formats times."""
    return f"""LEFT JOIN LATERAL (
    SELECT min(e.customer_id) AS customer_id,
           jsonb_agg(jsonb_build_object(
               'key', e.key, 'event', e.event, 'customer_id', e.customer_id, 'currency', e.currency,
               'lines', e.lines, 'time', {ts("e.event_time")}, 'reason', e.reason)) AS events
    FROM braze_sync.order_events e
    WHERE e.account_id = $1 AND e.order_id = ch.order_id
) es ON true"""


def event_key(order_id: str, kind: str, line_nos: Iterable[int]) -> str:
    """The ledger key of one event: `o1/ecommerce.order_refunded/2,3`."""
    return f"{order_id}/{EVENT_NAMES[kind]}/{','.join(str(n) for n in sorted(line_nos))}"


def parse_event_key(key: str) -> tuple[str, str, tuple[int, ...]] | None:
    """(order id, kind, line nos) of an event key, or None for any other key."""
    match = EVENT_KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), match.group(2), tuple(int(n) for n in match.group(3).split(","))


def _money(value: Decimal) -> float:
    return float(value) + 0.0  # + 0.0: no "-0.0" in payloads


class _Ledger:
    """What Braze has of one order as eCommerce events: placed lines (as sent) and closed lines."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.placed: dict[int, dict[str, Any]] = {}
        self.closed: set[int] = set()
        self.customer_id: str | None = None
        self.currency: str | None = None
        self.whole_closed = False
        for ev in events:
            self.add(ev["event"], ev["customer_id"], ev["currency"], ev["lines"], ev["reason"])

    def add(self, kind: str, customer_id: str, currency: str, lines: list[dict[str, Any]], reason: str | None) -> None:
        nos = {ln["line_no"] for ln in lines}
        if kind == PLACED:
            self.placed.update({ln["line_no"]: ln for ln in lines})
            self.customer_id, self.currency = customer_id, currency
        else:
            self.closed |= nos
            self.whole_closed |= reason in WHOLE_ORDER


def plan(order: _Order, out: _Out) -> str | None:
    """Add the eCommerce events `order` still owes Braze to `out`; returns why nothing was sent."""
    from masivo_braze_sync.entities.purchases import FULFILLED  # purchases imports this module

    ledger = _Ledger(orjson.loads(order.row["esent"]) if order.row.get("esent") else [])
    prior: dict[tuple[str, tuple[int, ...]], str] = {}
    for key, status in (orjson.loads(order.row["eprior"]) if order.row.get("eprior") else {}).items():
        parsed = parse_event_key(key)
        if parsed is not None:
            prior[(parsed[1], parsed[2])] = status
    live = {k for k, s in prior.items() if s in ("landed", "maybe")}
    refused = {k for k, s in prior.items() if s == "refused"}

    # an interrupted attempt's order_placed that may have landed: the same event again
    for kind, nos in sorted(live):
        if kind == PLACED and not set(nos) <= set(ledger.placed):
            lines = _current(order, nos)
            if lines is None or order.currency is None:
                out.reject(order.id, "order changed after an interrupted eCommerce send: not recorded")
                continue
            _emit(out, order, PLACED, order.customer_id, order.currency, lines, order.time("fulfilled_at"), None)
            ledger.add(PLACED, order.customer_id, order.currency, lines, None)

    # an interrupted attempt's refund or cancellation: the same event again, recorded this time
    for kind, nos in sorted(live):
        if kind != PLACED and set(nos) <= set(ledger.placed) and not set(nos) & ledger.closed:
            reason, time = _resumed(order, kind)
            _close(out, order, ledger, kind, nos, reason, time)

    if order.status == FULFILLED:
        if ledger.whole_closed:
            out.reject(order.id, "order fulfilled again after its reversal was sent: not sent again")
        elif not ledger.placed:
            _place(order, out, refused)
        else:
            _note_changes(order, ledger, out)

    # what is due now: the placed lines not closed yet that the order no longer counts
    due: dict[tuple[str, str, str], list[int]] = {}
    for ln in sorted(set(ledger.placed) - ledger.closed):
        reversal = order.reversal(ln)
        if reversal is not None:
            reason, time = reversal
            kind = CANCELLED if reason in ("CANCELLED", "ORDER_DELETED") else REFUNDED
            due.setdefault((kind, reason, time), []).append(ln)
    for (kind, reason, time), nos in due.items():
        if (kind, tuple(nos)) not in refused:
            _close(out, order, ledger, kind, tuple(nos), reason, time)

    if ledger.placed or order.status == FULFILLED:
        return None
    return "order never placed as an eCommerce event"


def _current(order: _Order, nos: Iterable[int]) -> list[dict[str, Any]] | None:
    """The lines `nos` as an order_placed carries them, from the current lines; None if any is gone or bad."""
    from masivo_braze_sync.entities.purchases import LineRejected, check_line

    lines = []
    for ln in nos:
        raw = order.lines.get(ln)
        if raw is None:
            return None
        try:
            lines.append(_line(check_line(order.id, raw), raw))
        except LineRejected:
            return None
    return lines


def _line(line: Line, raw: dict[str, Any]) -> dict[str, Any]:
    """A checked line as the ledger keeps it (and `products` carries it)."""
    metadata = {k: v for k, v in line.properties.items() if k not in ("order_id", "product_name")}
    return {
        "line_no": line.line_no,
        "product_id": line.product_id,
        "product_name": raw.get("name") or line.product_id,
        "quantity": line.quantity,
        "unit_price": str(line.unit_price),
        "metadata": metadata,
    }


def _place(order: _Order, out: _Out, refused: set[tuple[str, tuple[int, ...]]]) -> None:
    """The order_placed of a fulfilled order: every line, or nothing when the order is held."""
    from masivo_braze_sync.entities.purchases import LineRejected, check_line, line_key

    if not order.lines:
        return
    if order.currency is None:
        out.reject(order.id, "currency is not an ISO 4217 code: order held")
        return
    good: list[dict[str, Any]] = []
    held: list[int] = []
    for ln in sorted(order.lines):
        raw = order.lines[ln]
        try:
            line = check_line(order.id, raw)
            bad = next((k for k in line.properties if BAD_NESTED_KEY.search(k)), None)
            if bad is not None:
                raise LineRejected(
                    f"property '{bad[:64]}' has a '.', '$' or space (not allowed in eCommerce metadata)",
                    zero_revenue=line.quantity == 0 or line.unit_price == 0,
                )
        except LineRejected as exc:
            out.reject(line_key(order.id, ln), exc.reason)
            if not exc.zero_revenue:
                held.append(ln)
            continue
        good.append(_line(line, raw))
    if held:
        shown = ", ".join(str(ln) for ln in held[:10]) + (", ..." if len(held) > 10 else "")
        out.reject(order.id, f"order held: line(s) {shown} cannot be sent and carry revenue; nothing of it is sent")
        return
    if not good or (PLACED, tuple(ln["line_no"] for ln in good)) in refused:
        return
    if len(orjson.dumps(_properties(order.id, order.currency, good))) > BRAZE.nested_properties_bytes:
        out.reject(order.id, f"order too large for one eCommerce event (over {BRAZE.nested_properties_bytes} bytes)")
        return
    _emit(out, order, PLACED, order.customer_id, order.currency, good, order.time("fulfilled_at"), None)


def _note_changes(order: _Order, ledger: _Ledger, out: _Out) -> None:
    """Lines of a placed, fulfilled order added or edited since: recorded, not sent."""
    from masivo_braze_sync.entities.purchases import line_key

    for ln, raw in sorted(order.lines.items()):
        if ln in ledger.closed:
            continue
        sent = ledger.placed.get(ln)
        if sent is None:
            out.reject(line_key(order.id, ln), "line added after the order was placed: not sent as an eCommerce event")
        elif not (
            raw.get("sku") == sent["product_id"]
            and raw.get("quantity") == sent["quantity"]
            and raw.get("unit_price") is not None
            and Decimal(raw["unit_price"]) == Decimal(sent["unit_price"])
            and order.currency == ledger.currency
        ):
            out.reject(line_key(order.id, ln), "line changed after it was sent: not sent again")


def _resumed(order: _Order, kind: str) -> tuple[str, str]:
    """Reason and time of a refund or cancellation an interrupted attempt sent."""
    row = order.row
    if kind == CANCELLED:
        if order.status == "CANCELLED" or (row["cancelled_at"] and order.status != "ORDER_DELETED"):
            return "CANCELLED", order.time("cancelled_at")
        return "ORDER_DELETED", row["deleted_at"]
    if row["reversed_at"]:
        return "REVERSED", row["reversed_at"]
    return "LINE_DELETED", row["read_at"]


def _close(out: _Out, order: _Order, ledger: _Ledger, kind: str, nos: tuple[int, ...], reason: str, time: str) -> None:
    lines = [ledger.placed[ln] for ln in nos]
    _emit(out, order, kind, ledger.customer_id or order.customer_id, ledger.currency or "", lines, time, reason)
    ledger.add(kind, ledger.customer_id or order.customer_id, ledger.currency or "", lines, reason)


def _properties(order_id: str, currency: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum((Decimal(ln["unit_price"]) * ln["quantity"] for ln in lines), Decimal(0))
    return {
        "order_id": order_id,
        "total_value": _money(total),
        "currency": currency,
        "products": [
            {
                "product_id": ln["product_id"],
                "product_name": ln["product_name"],
                "variant_id": ln["product_id"],  # Masivo has no variants: the sku stands for it
                "quantity": ln["quantity"],
                "price": _money(Decimal(ln["unit_price"])),
                "metadata": ln["metadata"],
            }
            for ln in lines
        ],
        "source": SOURCE,
    }


def _emit(
    out: _Out,
    order: _Order,
    kind: str,
    customer_id: str,
    currency: str,
    lines: list[dict[str, Any]],
    time: str,
    reason: str | None,
) -> None:
    key = event_key(order.id, kind, (ln["line_no"] for ln in lines))
    properties = _properties(order.id, currency, lines)
    if kind == CANCELLED:
        properties["cancel_reason"] = reason
    elif kind == REFUNDED:
        properties["metadata"] = {"reason": reason}
    body = {"external_id": customer_id, "name": EVENT_NAMES[kind], "time": time, "properties": properties}
    if out.update_only:  # the Create toggle is off: no object may create a profile
        body["_update_existing_only"] = True
    out.add(
        key,
        "events",
        orjson.dumps(body),
        {
            "key": key,
            "order_id": order.id,
            "customer_id": customer_id,
            "currency": currency,
            "time": time,
            "reason": reason,
            "event": kind,
            "lines": orjson.dumps(lines).decode(),
        },
    )
    out.count(f"orders {kind}")


def ledger_rows(account_id: str, state: list[dict[str, Any]]) -> list[tuple]:
    """INSERT parameters for `braze_sync.order_events` from delivered state rows."""
    return [
        (
            account_id,
            r["order_id"],
            r["key"],
            r["event"],
            r["customer_id"],
            r["currency"],
            r["lines"],
            r["time"],
            r["reason"],
        )
        for r in state
    ]


INSERT_SQL = (
    "INSERT INTO braze_sync.order_events (account_id, order_id, key, event, customer_id, currency, lines, "
    "event_time, reason) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::timestamptz, %s) "
    "ON CONFLICT (account_id, order_id, key) DO NOTHING"
)
