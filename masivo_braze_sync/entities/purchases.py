"""Masivo orders → Braze purchases (`/users/track` `purchases`, docs/braze.md#purchase-object).

The unit is the order: a change to an order or to any of its lines makes the sync read the order
again (current status, current lines, the customer) together with what Braze already has for it,
from `braze_sync.purchase_lines` (one row per order line and sign, written in the transaction that
moves the cursor). What is sent is the difference between what the order should count for and what
was sent, under one rule: **each line gets at most one purchase and at most one reversal**.

- `FULFILLED`: every line not sent yet becomes a purchase: `product_id` = sku, `currency` = the
  order's or else the account's, `price` = unit price, `quantity` = line quantity, `time` =
  `fulfilled_at`, properties `order_id`, `line_no`, `product_name` and the line's own properties
  flattened (a line key equal to one of those three, or `purchase_id`, is renamed `line_<key>`). A quantity over 100
  is split into purchases of 100 and a remainder (Braze caps `quantity` at 100). Every purchase
  object, each part of a split line and each reversal, carries its own key as the property
  `purchase_id` (`<order>/<line>/<+|->/<part>`): Braze sees each as its own purchase.
- `REVERSED`, `CANCELLED`, or the order row deleted: every line sent and not reversed yet is sent
  again with the negative price of what was sent (ledger values, not the current line), same sku,
  quantity split and currency; `time` = `reversed_at` / `cancelled_at` / the deletion; properties
  `reversal: true`, `reversal_reason`, `original_time`. A line deleted from a fulfilled order
  after it was sent is reversed the same way (`LINE_DELETED`). An order never sent sends nothing.
- Refulfilment: an order fulfilled again after its reversal was sent is not sent again (recorded
  as rejected with the reason); an order that leaves `FULFILLED` for another status (`PENDING`)
  and comes back sends nothing new. A line edited after it was sent is not re-sent (recorded).
- Held orders: a line with a quantity below 1 or over 100,000 (1,000 purchases), a missing or
  non-finite price, an empty sku or one over 255 characters, a name over 255 characters or
  properties that cannot be made valid is rejected with its reason. The rest of the order goes
  only when every rejected line carries no revenue (quantity 0 or price 0): otherwise the whole
  order is held (recorded with the line numbers) so that Braze never shows a partial order, and
  it is sent once a later change (or `retry-rejected`) fixes it. A currency that is not ISO 4217
  holds the order.
- skipped (counted): the customer is deleted (Braze would re-create the profile); the order is
  not fulfilled, or was reversed, cancelled or deleted before it was ever sent.
- rejected: the customer does not exist, its id is empty or over 987 bytes, the order id is over
  255 characters (it travels as a property).

With the customers' Create toggle off, every purchase is update-only (`_update_existing_only`).

Keys: a purchase object's key is `<order id>/<line no>/<+|->/<part>` (part = index in the split),
stable across runs, so the pipeline's delivery ledger never re-sends a part that landed. An
interrupted attempt at a batch is resumed with what may have landed (the open batch's delivery
rows, read by the extract query): those parts are rebuilt with the same keys and recorded at
commit even if the order moved on meanwhile (reversed, say), so the reversal sent later matches.
Rejected rows are keyed by the order id (order-level reasons), by the line's change-log key
`["<order id>", <line no>]` (line-level reasons), or by the purchase key (objects Braze refused);
`retry-rejected` queues the order behind any of them. `sync --full` queues every order: lines the
ledger says were sent are not sent again, unless `--resend` (a new workspace), which forgets the
account's ledger first. Reasons carry ids and rule names only, never values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import polars as pl
import psycopg
from psycopg.types.json import Jsonb

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.entities import ecommerce
from masivo_braze_sync.entities.base import (
    CUSTOMER_DELETED,
    CUSTOMER_STATE_SQL,
    IN_LOG_RANGE,
    OBJECT_SCHEMA,
    REJECT_SCHEMA,
    AccountContext,
    Entity,
    Prepared,
    customer_id_rules,
    customer_missing,
    first_rule,
    judge,
    update_only,
)
from masivo_braze_sync.errors import RecordRejected
from masivo_braze_sync.iso4217 import is_currency
from masivo_braze_sync.partitions import SEPARATOR
from masivo_braze_sync.properties import MAX_PROPERTIES, MAX_STRING, flatten_event_properties, flatten_properties

PLUS, MINUS = "+", "-"
MAX_QUANTITY = 100  # Braze: `quantity` must be <= 100 (docs/braze.md#purchase-object)
MAX_PARTS = 1000  # a line needing more purchases than this is refused (quantity over 100,000)
FULFILLED = "FULFILLED"
TERMINAL = ("REVERSED", "CANCELLED")
DELETED = "ORDER_DELETED"  # status of an order whose row is gone
LINE_DELETED = "LINE_DELETED"
LINK_KEYS = ("order_id", "line_no", "product_name", "purchase_id")
_LINK_KEYS = frozenset(LINK_KEYS)
UNREADABLE_LINES = "a line's properties hold a number out of range or nest over 1,000 levels: order held"

STATE_SCHEMA = {
    "key": pl.String,
    "order_id": pl.String,
    "line_no": pl.Int64,
    "sign": pl.String,
    "part": pl.Int64,
    "customer_id": pl.String,
    "product_id": pl.String,
    "currency": pl.String,
    "unit_price": pl.String,  # signed, as a decimal string (no float rounding in the ledger)
    "quantity": pl.Int64,
    "time": pl.String,
    "reason": pl.String,
    # eCommerce events (entities/ecommerce.py): the event kind and its lines as JSON; null for purchases
    "event": pl.String,
    "lines": pl.String,
}


def _ts(expr: str) -> str:
    return f"""to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


EXTRACT_SQL = f"""
WITH changed AS (
    SELECT CASE WHEN entity = 'orders' THEN entity_key ELSE (entity_key::jsonb) ->> 0 END AS order_id,
           min(id) AS first_id,
           max(created_at) FILTER (WHERE entity = 'orders' AND op = 'D') AS deleted_at
    FROM braze_sync.change_log
    WHERE entity IN ('orders', 'order_items') AND {IN_LOG_RANGE}
    GROUP BY 1
),
-- an interrupted attempt at this batch: the keys it planned and what became of each
open_batch AS (
    -- every partition's (docs/change-capture.md#partitions): another partition's keys are other orders'
    SELECT id FROM braze_sync.batches WHERE split_part(consumer, '{SEPARATOR}', 1) = 'purchases' AND account_id = $1
                                         AND status = 'open'
),
planned AS (
    SELECT k AS key,
           bool_or(d.status = 'delivered') AS delivered,
           bool_or(d.status IN ('sending', 'unknown')) AS maybe,
           EXISTS (SELECT 1 FROM braze_sync.rejected_rows r JOIN open_batch ob ON r.batch_id = ob.id
                   WHERE r.stage = 'braze' AND r.entity_key = k) AS refused
    FROM open_batch b
    JOIN braze_sync.deliveries d ON d.batch_id = b.id
    CROSS JOIN LATERAL unnest(d.keys) AS k
    GROUP BY k
),
prior AS (
    SELECT substring(key FROM '^(.*)/-?[0-9]+/[+-]/[0-9]+$') AS order_id,
           jsonb_object_agg(key, CASE WHEN refused THEN 'refused' WHEN delivered THEN 'landed'
                                      WHEN maybe THEN 'maybe' ELSE 'planned' END) AS keys
    FROM planned
    GROUP BY 1
),{ecommerce.PRIOR_CTE}
SELECT ch.order_id AS key,
       o.id IS NOT NULL AS present,
       coalesce(o.customer_id, s.customer_id, es.customer_id) AS customer_id,
       o.status,
       nullif(btrim(o.currency::text), '') AS currency,
       {_ts("o.fulfilled_at")} AS fulfilled_at,
       {_ts("o.reversed_at")} AS reversed_at,
       {_ts("o.cancelled_at")} AS cancelled_at,
       {_ts("o.updated_at")} AS updated_at,
       {_ts("coalesce(ch.deleted_at, now())")} AS deleted_at,
       {_ts("now()")} AS read_at,
       {CUSTOMER_STATE_SQL},
       li.lines::text AS lines,
       s.lines::text AS sent,
       pr.keys::text AS prior,
       es.events::text AS esent,
       ep.keys::text AS eprior
FROM changed ch
LEFT JOIN public.orders o ON o.account_id = $1 AND o.id = ch.order_id
LEFT JOIN LATERAL (
    SELECT min(p.customer_id) AS customer_id,
           jsonb_agg(jsonb_build_object(
               'line_no', p.line_no, 'sign', p.sign, 'customer_id', p.customer_id,
               'product_id', p.product_id, 'currency', p.currency, 'unit_price', p.unit_price::text,
               'split', p.split, 'time', {_ts("p.purchase_time")})) AS lines
    FROM braze_sync.purchase_lines p
    WHERE p.account_id = $1 AND p.order_id = ch.order_id
) s ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'line_no', i.line_no, 'sku', i.sku, 'name', i.name, 'quantity', i.quantity,
               'unit_price', i.unit_price::text, 'properties', i.properties) ORDER BY i.line_no) AS lines
    FROM public.order_items i
    WHERE i.account_id = $1 AND i.order_id = ch.order_id
) li ON true
LEFT JOIN prior pr ON pr.order_id = ch.order_id
{ecommerce.sent_join(_ts)}
LEFT JOIN eprior ep ON ep.order_id = ch.order_id
LEFT JOIN public.customers c ON c.account_id = $1 AND c.id = coalesce(o.customer_id, s.customer_id, es.customer_id)
ORDER BY ch.first_id
"""


def split_quantity(quantity: int) -> list[int]:
    """Quantities of at most 100 that sum to `quantity` (>= 1): 250 → [100, 100, 50]."""
    full, rest = divmod(quantity, MAX_QUANTITY)
    return [MAX_QUANTITY] * full + ([rest] if rest else [])


PURCHASE_KEY = re.compile(r"(.*)/-?[0-9]+/[+-]/[0-9]+", re.DOTALL)


def line_key(order_id: str, line_no: int) -> str:
    """The key of a line in rejected rows: the change log's `order_items` key, `["o1", 2]`."""
    return f"[{orjson.dumps(order_id).decode()}, {line_no}]"


def order_of(key: str) -> str:
    """The order behind any key this entity records: an order id, a line key or a purchase key."""
    if key.startswith("["):
        try:
            value = orjson.loads(key)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            return value[0]
    event = ecommerce.parse_event_key(key)
    if event is not None:
        return event[0]
    match = PURCHASE_KEY.fullmatch(key)
    return match.group(1) if match else key


def purchase_key(order_id: str, line_no: int, sign: str, part: int) -> str:
    """The ledger key of one purchase object: `o1/1/+/0`."""
    return f"{order_id}/{line_no}/{sign}/{part}"


def parse_key(key: str) -> tuple[str, int, str, int]:
    """(order id, line no, sign, part) of a purchase key; order ids may contain '/'."""
    order_id, line_no, sign, part = key.rsplit("/", 3)
    return order_id, int(line_no), sign, int(part)


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal("NaN")


def _price(value: Decimal) -> float:
    return float(value) + 0.0  # + 0.0: no "-0.0" in payloads


@dataclass
class Side:
    """One side (purchase or reversal) of a line as Braze has it, or will once this batch lands."""

    customer_id: str
    product_id: str
    currency: str
    unit_price: Decimal  # signed
    parts: dict[int, int]  # part number -> quantity
    time: str

    @classmethod
    def from_ledger(cls, row: dict[str, Any]) -> Side:
        return cls(
            row["customer_id"],
            row["product_id"],
            row["currency"],
            Decimal(row["unit_price"]),
            {int(k): int(v) for k, v in row["split"].items()},
            row["time"],
        )


@dataclass
class Line:
    """A current order line that can be sent."""

    line_no: int
    product_id: str
    unit_price: Decimal
    quantity: int
    properties: dict[str, Any]

    @property
    def split(self) -> list[int]:
        return split_quantity(self.quantity)


class LineRejected(RecordRejected):
    """A line that cannot be sent; `zero_revenue` when dropping it leaves the order's revenue whole."""

    def __init__(self, reason: str, *, zero_revenue: bool) -> None:
        super().__init__(reason)
        self.zero_revenue = zero_revenue


def _rejected(reason: str, quantity: Any, price: Decimal | None) -> LineRejected:
    zero = quantity == 0 or (price is not None and price.is_finite() and price == 0)
    return LineRejected(reason, zero_revenue=zero)


def check_line(order_id: str, raw: dict[str, Any]) -> Line:
    """A current line as a `Line`, or LineRejected with the first rule it breaks."""
    line_no = raw["line_no"]
    quantity = raw.get("quantity")
    price = _decimal(raw.get("unit_price"))
    if quantity is None:
        raise _rejected("quantity is missing", quantity, price)
    if quantity < 1:
        raise _rejected("quantity is below 1", quantity, price)
    if quantity > MAX_QUANTITY * MAX_PARTS:
        raise _rejected(
            f"quantity is over {MAX_QUANTITY * MAX_PARTS} (more than {MAX_PARTS} purchases)", quantity, price
        )
    if price is None:
        raise _rejected("unit price is missing", quantity, price)
    if not price.is_finite():
        raise _rejected("unit price is not a finite number", quantity, price)
    sku = raw.get("sku")
    if not isinstance(sku, str) or not sku:
        raise _rejected("sku is empty", quantity, price)
    if len(sku) > MAX_STRING:
        raise _rejected(f"sku is longer than {MAX_STRING} characters", quantity, price)
    name = raw.get("name")
    if name is not None and len(name) > MAX_STRING:
        raise _rejected(f"product name is longer than {MAX_STRING} characters", quantity, price)
    props: dict[str, Any] = {"order_id": order_id, "line_no": line_no}
    if name:
        props["product_name"] = name
    own = raw.get("properties")
    if own is not None and not isinstance(own, dict):
        raise _rejected("properties are not a JSON object", quantity, price)
    try:
        flat = _flatten(own)
    except RecordRejected as exc:
        raise _rejected(exc.reason, quantity, price) from None
    if _LINK_KEYS.isdisjoint(flat):
        props.update(flat)  # the usual line: no key to rename
    else:
        for key, value in flat.items():
            if key in _LINK_KEYS:
                key = f"line_{key}"
                if key in flat or key in props:
                    raise _rejected(f"properties collide on key '{key}'", quantity, price)
            props[key] = value
    if len(props) + 1 > MAX_PROPERTIES:  # + `purchase_id`, added per part
        raise _rejected(f"more than {MAX_PROPERTIES} properties with the order link", quantity, price)
    return Line(line_no, sku, price, quantity, props)


def _flatten(own: dict[str, Any] | None) -> dict[str, Any]:
    """`flatten_properties`, by the events' fast path when it applies: that path builds the same
    properties (or hands the input to the general rules, which raise the same rejections) and is
    several times faster; only a result over the limit, which it would cut, is refused here."""
    if not own:
        return {}
    if len(own) > MAX_PROPERTIES:  # likely over the limit: the fast path would only add a try
        return flatten_properties(own)
    flat, count = flatten_event_properties(own)
    return flat if count <= MAX_PROPERTIES else flatten_properties(own)


def _currency(order_currency: str | None, ctx: AccountContext) -> str | None:
    code = (order_currency or ctx.currency or "").strip().upper()
    return code if is_currency(code) else None


def _loads(text: str | None, empty: Any) -> Any:
    return orjson.loads(text) if text else empty


#: `orjson.dumps(n)` of every quantity a part can have
_JSON_INTS = [str(n).encode() for n in range(MAX_QUANTITY + 1)]


class _Template:
    """A checked line with what its purchase bodies share, whatever the order.

    `orjson.dumps` writes a dict as `{` + `"key":value` members joined by `,` + `}`, with no space,
    each member written alone as it would be as a whole: so a body can be assembled from members
    dumped once per line (product, price, the line's properties) and once per order (customer,
    time, order id), with only the quantity and the purchase key per part. The result is the bytes
    `emit` dumps for the same object (tests/core/test_mapping_golden.py).
    """

    __slots__ = ("_pieces", "product_id", "properties", "split", "unit_price", "unit_value")

    def __init__(self, line: Line) -> None:
        self.product_id = line.product_id
        self.unit_value = line.unit_price
        self.unit_price = str(line.unit_price)
        self.split = line.split
        # the properties after `order_id` (checked with an empty one: no rule reads its value),
        # without the closing brace: `purchase_id` comes last
        written = orjson.dumps(line.properties)
        assert written.startswith(b'{"order_id":""')
        self.properties = written[len(b'{"order_id":""') : -1]
        self._pieces: dict[str, bytes] = {}

    def pieces(self, currency: str) -> bytes:
        """`,"product_id":...,"currency":...,"price":...,"quantity":` for an order's currency."""
        found = self._pieces.get(currency)
        if found is None:
            found = self._pieces[currency] = (
                b',"product_id":' + orjson.dumps(self.product_id) + b',"currency":' + orjson.dumps(currency)
                + b',"price":' + orjson.dumps(_price(self.unit_value)) + b',"quantity":'
            )  # fmt: skip
        return found


def _check_lines(text: str | None) -> list[tuple[int, _Template | LineRejected]] | None:
    """An order's lines (its `lines` text) checked, by line number; None when orjson cannot read them."""
    try:
        raws = orjson.loads(text) if text else []
    except orjson.JSONDecodeError:  # a jsonb number no double holds (1e400), or 1,000+ levels
        return None
    lines = {raw["line_no"]: raw for raw in raws}
    out: list[tuple[int, _Template | LineRejected]] = []
    for ln in sorted(lines):
        try:
            out.append((ln, _Template(check_line("", lines[ln]))))
        except LineRejected as exc:
            out.append((ln, exc))
    return out


@dataclass
class _Out:
    """What the transform builds for a frame of orders."""

    keys: list[str] = field(default_factory=list)
    arrays: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    #: what to remember per object, a tuple in STATE_SCHEMA's order
    state: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    #: the Create toggle is off: every object is update-only
    update_only: bool = False

    def count(self, name: str, n: int = 1) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + n

    #: `rejected` as a set (for `reject`), up to `_seen_upto` entries: the list is appended to directly too
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _seen_upto: int = 0

    def reject(self, key: str, reason: str) -> None:
        """Record a rejected key once (with `both`, purchases and eCommerce events may find the same)."""
        self._seen.update(self.rejected[self._seen_upto :])
        self._seen_upto = len(self.rejected)
        if (key, reason) not in self._seen:
            self.rejected.append((key, reason))

    def add(self, key: str, array: str, body: bytes, state: dict[str, Any]) -> None:
        """One object to send, and what to remember once Braze accepts it."""
        self.keys.append(key)
        self.arrays.append(array)
        self.bodies.append(body)
        self.state.append(tuple(map(state.get, STATE_SCHEMA)))

    def emit(
        self,
        order_id: str,
        line_no: int,
        sign: str,
        side: Side,
        parts: Iterable[int],
        properties: dict[str, Any],
        reason: str | None = None,
    ) -> None:
        for part in sorted(parts):
            key = purchase_key(order_id, line_no, sign, part)
            quantity = side.parts[part]
            body = {
                "external_id": side.customer_id,
                "product_id": side.product_id,
                "currency": side.currency,
                "price": _price(side.unit_price),
                "quantity": quantity,
                "time": side.time,
                "properties": {**properties, "purchase_id": key},  # parts of a split line differ
            }
            if self.update_only:
                body["_update_existing_only"] = True
            self.add(
                key,
                "purchases",
                orjson.dumps(body),
                {
                    "key": key,
                    "order_id": order_id,
                    "line_no": line_no,
                    "sign": sign,
                    "part": part,
                    "customer_id": side.customer_id,
                    "product_id": side.product_id,
                    "currency": side.currency,
                    "unit_price": str(side.unit_price),
                    "quantity": quantity,
                    "time": side.time,
                    "reason": reason,
                },
            )
            self.count("purchases" if sign == PLUS else "reversals")


class _Order:
    """One changed order: its current row, what Braze has of it, and what an interrupted attempt sent."""

    def __init__(self, row: dict[str, Any], ctx: AccountContext) -> None:
        self.id: str = row["key"]
        self.row = row
        self.status: str = (row["status"] or "") if row["present"] else DELETED
        self.customer_id: str = row["customer_id"]
        self.currency = _currency(row["currency"], ctx)
        self.lines: dict[int, dict[str, Any]] = (
            {raw["line_no"]: raw for raw in _loads(row["lines"], [])} if row["present"] else {}
        )
        self.sent: dict[tuple[int, str], Side] = {
            (r["line_no"], r["sign"]): Side.from_ledger(r) for r in _loads(row["sent"], [])
        }
        self.prior: dict[tuple[int, str], dict[int, str]] = {}
        for key, status in _loads(row["prior"], {}).items():
            _, line_no, sign, part = parse_key(key)
            self.prior.setdefault((line_no, sign), {})[part] = status

    def live(self, line_no: int, sign: str) -> set[int]:
        """Parts an interrupted attempt delivered, or sent without hearing back (may have landed)."""
        return {p for p, s in self.prior.get((line_no, sign), {}).items() if s in ("landed", "maybe")}

    def refused(self, line_no: int, sign: str) -> set[int]:
        """Parts Braze refused in an interrupted attempt: never sent again, never recorded."""
        return {p for p, s in self.prior.get((line_no, sign), {}).items() if s == "refused"}

    def time(self, name: str) -> str:
        return self.row[name] or self.row["updated_at"] or self.row["read_at"]

    def reversal(self, line_no: int) -> tuple[str, str] | None:
        """(reason, time) when the line's purchase must be reversed now, else None."""
        if self.status == "REVERSED":
            return "REVERSED", self.time("reversed_at")
        if self.status == "CANCELLED":
            return "CANCELLED", self.time("cancelled_at")
        if self.status == DELETED:
            return DELETED, self.row["deleted_at"]
        if self.status == FULFILLED and line_no not in self.lines:
            return LINE_DELETED, self.row["read_at"]
        return None


class PurchasesEntity(Entity):
    """Order lines as Braze purchases, reversed with negative prices."""

    name = "purchases"
    captured = ("orders", "order_items")
    after_customers = True  # docs/live.md#profile-before-event
    toggle = "sync_purchases"
    extract_sql = EXTRACT_SQL

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Order-level rules on whole columns: what is never sent, and what cannot be."""
        ledgers = [c for c in ("sent", "prior", "esent", "eprior") if c in frame.columns]
        history = pl.any_horizontal([pl.col(c).is_not_null() for c in ledgers])
        new = pl.col("present") & ~history
        verdict = first_rule(
            [
                (~pl.col("present") & ~history, "skip:order deleted before it was sent"),
                CUSTOMER_DELETED,
                (new & pl.col("status").is_in(list(TERMINAL)), "skip:order reversed or cancelled before it was sent"),
                (new & (pl.col("status").fill_null("") != FULFILLED), "skip:order not fulfilled"),
                customer_missing(),
                *customer_id_rules(),
                (pl.col("key").str.len_chars() > MAX_STRING, f"reject:order id is longer than {MAX_STRING} characters"),
            ]
        )
        return judge(frame, verdict)

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Each order to the purchases and reversals it still owes Braze."""
        out = _Out(update_only=update_only(ctx))
        names = frame.columns
        at = {name: i for i, name in enumerate(names)}
        key, present, status, sent, prior = (at[n] for n in ("key", "present", "status", "sent", "prior"))
        customer, currency, lines = at["customer_id"], at["currency"], at["lines"]
        fulfilled, updated, read = at["fulfilled_at"], at["updated_at"], at["read_at"]
        # the usual order (fulfilled, nothing of it sent or attempted, purchases only) goes the
        # short way; every other order through `_Order` and the general rules
        short = ctx.orders_as == "purchases"
        checked: dict[str | None, list[tuple[int, _Template | LineRejected]] | None] = {}
        for values in zip(*(frame[name].to_list() for name in names), strict=True):
            if short and values[status] == FULFILLED and values[present] and values[sent] is values[prior] is None:
                time = values[fulfilled] or values[updated] or values[read]  # `_Order.time("fulfilled_at")`
                order_currency = _currency(values[currency], ctx)
                self._new_order(values[key], values[customer], order_currency, time, values[lines], out, checked)
                continue
            row = dict(zip(names, values, strict=True))
            try:
                order = _Order(row, ctx)
            except orjson.JSONDecodeError:  # a jsonb number no double holds (1e400), or 1,000+ levels
                out.rejected.append((row["key"], UNREADABLE_LINES))
                continue
            self._order(order, out, ctx.orders_as)
        objects = pl.DataFrame({"key": out.keys, "array": out.arrays, "body": out.bodies}, schema=OBJECT_SCHEMA)
        rejects = pl.DataFrame(
            {
                "key": [k for k, _ in out.rejected],
                "stage": ["validate"] * len(out.rejected),
                "reason": [r for _, r in out.rejected],
            },
            schema=REJECT_SCHEMA,
        )
        columns = list(zip(*out.state, strict=True)) or [[] for _ in STATE_SCHEMA]
        state = pl.DataFrame(dict(zip(STATE_SCHEMA, columns, strict=True)), schema=STATE_SCHEMA)
        return Prepared(frame=objects, rejected=rejects, skipped=out.skipped, state=state, metrics=out.metrics)

    def check(self, account: AccountConfig) -> None:
        """An `orders_as` that is not one of ORDERS_AS fails the account's run (ConfigurationError)."""
        account.orders_mode()

    @staticmethod
    def _new_order(order_id: str, customer_id: str, currency: str | None, time: str, text: str | None, out: _Out,
                   checked: dict[str | None, list[tuple[int, _Template | LineRejected]] | None]) -> None:  # fmt: skip
        """A fulfilled order nothing of which was sent or attempted: what `_order` does with it in
        `purchases` mode (every line's purchases, or the order held, or a skip when it has no lines),
        without the ledger and resume bookkeeping that cannot apply to it. `checked` holds the checked
        lines per lines text: orders with the same lines (an order's lines hold no order id) share them."""
        if text in checked:
            lines = checked[text]
        else:
            lines = checked[text] = _check_lines(text)
        if lines is None:
            out.rejected.append((order_id, UNREADABLE_LINES))
            return
        if not lines:
            out.skipped["order already sent"] = out.skipped.get("order already sent", 0) + 1
            return
        if currency is None:
            out.rejected.append((order_id, "currency is not an ISO 4217 code: order held"))
            out.count("orders held")
            return
        held: list[int] = []
        for ln, line in lines:
            if isinstance(line, LineRejected):
                out.rejected.append((line_key(order_id, ln), line.reason))
                if not line.zero_revenue:
                    held.append(ln)
        if held:
            shown = ", ".join(str(ln) for ln in held[:10]) + (", ..." if len(held) > 10 else "")
            out.rejected.append(
                (order_id, f"order held: line(s) {shown} cannot be sent and carry revenue; nothing of it is sent")
            )
            out.count("orders held")
            return
        # each body as orjson writes it, from pieces (see `_Template`): the customer, time and order once
        head = b'{"external_id":' + orjson.dumps(customer_id)
        middle = b',"time":' + orjson.dumps(time) + b',"properties":{"order_id":' + orjson.dumps(order_id)
        tail = b',"_update_existing_only":true}' if out.update_only else b"}"
        state = out.state
        for ln, line in lines:
            if isinstance(line, LineRejected):
                continue  # carries no revenue (else the order is held): recorded above, not sent
            pieces = line.pieces(currency)
            for part, quantity in enumerate(line.split):
                key = f"{order_id}/{ln}/{PLUS}/{part}"  # `purchase_key`
                out.keys.append(key)
                out.arrays.append("purchases")
                out.bodies.append(
                    b"".join((head, pieces, _JSON_INTS[quantity], middle, line.properties, b',"purchase_id":',
                              orjson.dumps(key), b"}", tail))
                )  # fmt: skip
                # STATE_SCHEMA's order; reason, event and lines are for reversals and eCommerce events
                state.append(
                    (key, order_id, ln, PLUS, part, customer_id, line.product_id, currency, line.unit_price, quantity,
                     time, None, None, None)
                )  # fmt: skip
            out.count("purchases", len(line.split))

    def _order(self, order: _Order, out: _Out, orders_as: str) -> None:
        """One order: its purchases, its eCommerce events, or both (`orders_as`); a skip if nothing."""
        before = (len(out.keys), len(out.rejected))
        never_placed = None
        if orders_as != "ecommerce":
            self._purchases(order, out)
        if orders_as != "purchases":
            never_placed = ecommerce.plan(order, out)
        if (len(out.keys), len(out.rejected)) == before:
            nothing = {
                FULFILLED: "order already sent",
                "REVERSED": "reversal already sent",
                "CANCELLED": "reversal already sent",
                DELETED: "reversal already sent",
            }.get(order.status, "order not fulfilled")
            if orders_as == "ecommerce" and never_placed:
                nothing = never_placed
            out.skipped[nothing] = out.skipped.get(nothing, 0) + 1

    def _purchases(self, order: _Order, out: _Out) -> None:
        """The purchases and reversals an order still owes Braze."""
        # the purchase side of each line: ledger first, then what an interrupted attempt sent
        plus: dict[int, Side] = {ln: s for (ln, sign), s in order.sent.items() if sign == PLUS}
        to_send: dict[int, tuple[Line, set[int]]] = {}
        resumed = sorted({ln for (ln, sign) in order.prior if sign == PLUS and ln not in plus and order.live(ln, PLUS)})
        for ln in resumed:
            line = self._current(order, ln)
            parts = order.live(ln, PLUS)
            if line is None or order.currency is None or not parts <= set(range(len(line.split))):
                out.rejected.append((line_key(order.id, ln), "line changed after an interrupted send: not recorded"))
                continue
            to_send[ln] = (line, parts)  # what may have landed; all parts if the order still goes

        closed = any(sign == MINUS for (_, sign) in order.sent) or any(
            sign == MINUS and order.live(ln, sign) for (ln, sign) in order.prior
        )
        if order.status == FULFILLED:
            if closed:
                out.rejected.append((order.id, "order fulfilled again after its reversal was sent: not sent again"))
            else:
                self._fulfil(order, plus, to_send, out)
            for ln, side in plus.items():
                self._note_edit(order, ln, side, out)

        for ln, (line, parts) in sorted(to_send.items()):
            parts = parts - order.refused(ln, PLUS)
            if not parts:
                continue
            split = line.split
            side = Side(
                order.customer_id,
                line.product_id,
                order.currency or "",
                line.unit_price,
                {p: split[p] for p in parts},
                order.time("fulfilled_at"),
            )
            out.emit(order.id, ln, PLUS, side, parts, line.properties)
            plus[ln] = side

        for ln, side in sorted(plus.items()):
            if (ln, MINUS) in order.sent:
                continue
            due = order.reversal(ln)
            parts = set(side.parts) if due else order.live(ln, MINUS) & set(side.parts)
            parts -= order.refused(ln, MINUS)
            if not parts:
                continue
            reason, time = due or self._resumed_reversal(order)
            minus = Side(side.customer_id, side.product_id, side.currency, -side.unit_price, side.parts, time)
            props = {
                "order_id": order.id,
                "line_no": ln,
                "reversal": True,
                "reversal_reason": reason,
                "original_time": side.time,
            }
            out.emit(order.id, ln, MINUS, minus, parts, props, reason)

    def _fulfil(
        self, order: _Order, plus: dict[int, Side], to_send: dict[int, tuple[Line, set[int]]], out: _Out
    ) -> None:
        """Lines of a fulfilled order not sent yet: all of them, or none when the order is held."""
        # lines an interrupted attempt started are candidates too: their other parts still go
        candidates = [ln for ln in sorted(order.lines) if ln not in plus]
        if not candidates:
            return
        if order.currency is None:
            out.rejected.append((order.id, "currency is not an ISO 4217 code: order held"))
            out.count("orders held")
            return
        good: list[Line] = []
        held: list[int] = []
        for ln in candidates:
            try:
                good.append(check_line(order.id, order.lines[ln]))
            except LineRejected as exc:
                out.rejected.append((line_key(order.id, ln), exc.reason))
                if not exc.zero_revenue:
                    held.append(ln)
        if held:
            shown = ", ".join(str(ln) for ln in held[:10]) + (", ..." if len(held) > 10 else "")
            out.rejected.append(
                (order.id, f"order held: line(s) {shown} cannot be sent and carry revenue; nothing of it is sent")
            )
            out.count("orders held")
            return
        for line in good:
            to_send[line.line_no] = (line, set(range(len(line.split))))

    def _current(self, order: _Order, line_no: int) -> Line | None:
        raw = order.lines.get(line_no)
        if raw is None:
            return None
        try:
            return check_line(order.id, raw)
        except LineRejected:
            return None

    def _note_edit(self, order: _Order, line_no: int, side: Side, out: _Out) -> None:
        """A line of a fulfilled order edited after its purchase was sent: recorded, not re-sent."""
        raw = order.lines.get(line_no)
        if raw is None or (line_no, MINUS) in order.sent:
            return
        same = (
            raw.get("sku") == side.product_id
            and raw.get("quantity") == sum(side.parts.values())
            and _decimal(raw.get("unit_price")) == side.unit_price
            and order.currency == side.currency
        )
        if not same:
            out.rejected.append((line_key(order.id, line_no), "line changed after it was sent: not sent again"))

    @staticmethod
    def _resumed_reversal(order: _Order) -> tuple[str, str]:
        """Reason and time of a reversal an interrupted attempt sent, the order having moved on since."""
        if order.row["reversed_at"]:
            return "REVERSED", order.row["reversed_at"]
        if order.row["cancelled_at"]:
            return "CANCELLED", order.row["cancelled_at"]
        return "UNKNOWN", order.row["read_at"]

    def requeue_entries(self, keys: list[str]) -> list[tuple[str, str]]:
        """`retry-rejected`: the orders behind rejected keys are read again."""
        return [("orders", order_of(key)) for key in keys]

    def full_resync(self, conn: psycopg.Connection, account_id: str, *, resend: bool) -> int:
        """Queue every order (`sync --full`); with `resend` (a new workspace) forget what was sent first,
        so every fulfilled order is sent again; without it, the ledger keeps anything from going twice."""
        if resend:
            conn.execute("DELETE FROM braze_sync.purchase_lines WHERE account_id = %s", (account_id,))
            conn.execute("DELETE FROM braze_sync.order_events WHERE account_id = %s", (account_id,))
        return super().full_resync(conn, account_id, resend=resend)

    def commit_state(self, conn: psycopg.Connection, ctx: AccountContext, state: pl.DataFrame) -> None:
        """Record each line side Braze accepted (its parts summed), and each eCommerce event, in the
        cursor's transaction."""
        events = state.filter(pl.col("event").is_not_null())
        if events.height:
            with conn.cursor() as cur:  # a recorded event is never built again: a conflict cannot happen
                cur.executemany(ecommerce.INSERT_SQL, ecommerce.ledger_rows(ctx.account_id, events.to_dicts()))
        sides: dict[tuple[str, int, str], dict[str, Any]] = {}
        for r in state.filter(pl.col("event").is_null()).iter_rows(named=True):
            side = sides.setdefault((r["order_id"], r["line_no"], r["sign"]), r | {"split": {}})
            side["split"][str(r["part"])] = r["quantity"]
        rows = [
            (
                ctx.account_id,
                order_id,
                line_no,
                sign,
                s["customer_id"],
                s["product_id"],
                s["currency"],
                Decimal(s["unit_price"]),
                sum(s["split"].values()),
                Jsonb(s["split"]),
                s["time"],
                s["reason"],
            )
            for (order_id, line_no, sign), s in sides.items()
        ]
        with conn.cursor() as cur:
            # a conflict cannot happen (a recorded side is never built again); never overwrite one
            cur.executemany(
                "INSERT INTO braze_sync.purchase_lines (account_id, order_id, line_no, sign, customer_id, "
                "product_id, currency, unit_price, quantity, split, purchase_time, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s) "
                "ON CONFLICT (account_id, order_id, line_no, sign) DO NOTHING",
                rows,
            )


PURCHASES = PurchasesEntity()
