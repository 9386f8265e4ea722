"""Bad input, generated with hypothesis over Masivo's source tables: every row either reaches the
(strict) emulator as a valid object or is recorded as rejected with a reason; a run never crashes
and never holds back another row.

Each example gets an account of its own (the session database is not emptied between examples),
writes its rows, syncs, and checks the outcome of every row against the emulator and
`braze_sync.rejected_rows`. Nothing may be refused by the emulator itself (stage `braze`): the
pipeline's own checks must be at least as strict as Braze's.
"""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from masivo_braze_sync.entities.purchases import line_key, order_of
from tests.reliability.helpers import sync_caught_up

pytestmark = pytest.mark.slow

EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
_accounts = itertools.count(1)

# -- strategies -----------------------------------------------------------------------------------

# Postgres text and jsonb cannot hold U+0000 or lone surrogates; anything else goes: every script, emoji, combining
# marks, RTL, control characters, line separators
TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # no lone surrogates: not UTF-8
AT_LIMIT_ID = "x" * 987  # Braze's external_id limit, in bytes
OVER_LIMIT_ID = "é" * 494  # 988 bytes, 494 characters
LONG = "ñ" * 10_240  # a 10 KB string (and then some, in bytes)


def texts(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(TEXT, max_size=max_size),
        st.sampled_from(["", " ", "x" * 255, "x" * 256, LONG, "😀" * 255, "\u202e\u2028\t\n", "a\u0301" * 100]),
    )


KEYS = st.one_of(
    st.text(TEXT, max_size=12),
    st.sampled_from(["$", "$ref", "time", "event_name", "a_b", "a", "b", "", "k" * 256, "masivo_x", "email"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too: jsonb keeps them as numeric
    st.sampled_from([0, -0.0, 10**400, -(10**400), 2**63, 2**64, 10**-400]),  # doubles overflow/underflow
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has no NaN or infinities
    texts(),
)


def _nest(depth: int, leaf: object) -> object:
    for i in range(depth):
        leaf = {"n": leaf} if i % 2 else [leaf]
    return leaf


JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)),
    max_leaves=12,
)
JSON_OBJECTS = st.one_of(
    st.dictionaries(KEYS, JSON_VALUES, max_size=6),
    st.builds(lambda d, leaf: {"deep": _nest(d, leaf)}, st.integers(28, 40), SCALARS),  # around the 32-level limit
    st.just({"a": {"b": 1}, "a_b": 2}),  # keys that collide after flattening
    st.just({"self": {"$ref": "#"}, "parent": {"self": {"$ref": "#/parent"}}}),  # cyclic-looking
    st.builds(lambda n: {f"p{i}": i for i in range(n)}, st.integers(250, 260)),  # around 256 properties
)
JSON_ANY = st.one_of(JSON_OBJECTS, JSON_VALUES)  # not even an object, sometimes


class Raw(str):
    """JSON text for a jsonb column, for what Python's encoders refuse (1,100 levels of nesting)."""

    __slots__ = ()


DEEPEST = Raw('{"deep": ' + "[" * 1100 + "1" + "]" * 1100 + "}")  # beyond orjson's 1,024 levels
HUGE = {"n": 10**400}  # a valid jsonb number that no double can hold


def _jsonb(value: object) -> object:
    return value if isinstance(value, Raw) else Jsonb(value)


def _account(make_account) -> str:
    return make_account(f"bad-{next(_accounts)}")


def _rejected(db, account: str, consumer: str) -> dict[str, list[tuple[str, str]]]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT entity_key, stage, reason FROM braze_sync.rejected_rows WHERE account_id = %s AND consumer = %s",
            (account, consumer),
        ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for key, stage, reason in rows:
        assert reason.strip(), f"{key}: rejected without a reason"
        out.setdefault(key, []).append((stage, reason))
    assert not [k for k, v in out.items() if any(s == "braze" for s, _ in v)], "the emulator refused objects"
    return out


# -- events ---------------------------------------------------------------------------------------

CUSTOMER_IDS = ["c1", "c-ünï😀", AT_LIMIT_ID, OVER_LIMIT_ID, "", "deleted", "missing"]
EVENT_ROWS = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMER_IDS),
        st.one_of(texts(), st.sampled_from(["VISIT", "$VISIT", "$", "REDEEM_COUPON", "CANCEL"])),
        st.one_of(st.none(), JSON_ANY),
    ),
    min_size=1,
    max_size=8,
)


@EXAMPLES
@given(rows=EVENT_ROWS)
@example(rows=[("c1", "VISIT", HUGE), ("c1", "VISIT", DEEPEST), ("c-ünï😀", "$", None)])
def test_events_of_any_shape_are_sent_or_rejected_with_a_reason(rows, make_account, run_sync, emulator, db) -> None:
    account = _account(make_account)
    with db.connection() as conn:
        for cid in CUSTOMER_IDS[:-1]:
            conn.execute(
                "INSERT INTO customers (account_id, id, deleted_at) VALUES (%s, %s, %s)",
                (account, cid, "now()" if cid == "deleted" else None),
            )
        ids = [f"{account}-e{i}" for i in range(len(rows) + 1)]
        rows = [*rows, ("c1", "CONTROL", {"fine": True})]  # a good row that must always go
        for eid, (cid, kind, props) in zip(ids, rows, strict=True):
            conn.execute(
                "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, now())",
                (eid, account, cid, kind, None if props is None else _jsonb(props)),
            )

    runs = sync_caught_up(run_sync, db, account, "events")

    sent = _delivered(db, account, "events")
    # a `field` note (over 256 properties, cut to the 256 Braze keeps) is sent: not a rejection
    rejected = {k: v for k, v in _rejected(db, account, "events").items() if any(s != "field" for s, _ in v)}
    assert ids[-1] in sent  # nothing held the good row back
    assert not sent & set(rejected)
    assert len(sent) + len(rejected) + sum(r.skipped for r in runs) == len(ids)
    # what the ledger says was delivered is what the emulator stored, as valid events
    stored = sum(len(p.events) for p in emulator.profiles(account).values())
    assert sum(r.objects_sent for r in runs) == len(sent) == stored
    assert emulator.stats(account).rejected_objects == 0


def _delivered(db, account: str, consumer: str) -> set[str]:
    with db.connection() as conn:
        return {
            k
            for (keys,) in conn.execute(
                "SELECT keys FROM braze_sync.deliveries WHERE account_id = %s AND consumer = %s "
                "AND status = 'delivered'",
                (account, consumer),
            )
            for k in keys
        }


# -- customers --------------------------------------------------------------------------------------

DECIMALS = st.one_of(
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-(10**12), max_value=10**12),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("1e400"), Decimal(0)]),
)
CUSTOMER_ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.one_of(
                st.sampled_from(["c1", "ü😀", AT_LIMIT_ID, OVER_LIMIT_ID, " "]), st.text(TEXT, max_size=20)
            ),
            "email": st.one_of(st.none(), texts(), st.sampled_from(["a@b.co", " a@b.co ", "ñ@例え.jp", "a@b"])),
            "phone": st.one_of(st.none(), texts(), st.sampled_from(["+573001234567", "300 123 4567", "+1"])),
            "first_name": st.one_of(st.none(), texts()),
            "last_name": st.one_of(st.none(), texts()),
            "gender": st.one_of(st.none(), texts(8), st.sampled_from(["MALE", "female", "Other", "X"])),
            "dob": st.one_of(st.none(), st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))),
            "country": st.one_of(st.none(), texts(4), st.sampled_from(["CO", "co", "ZZ", "COL"])),
            "language": st.one_of(st.none(), texts(6), st.sampled_from(["es", "es-CO", "xx", "ES_co"])),
            "city": st.one_of(st.none(), texts()),
            "status": st.one_of(st.none(), texts()),
            "tier": st.one_of(st.none(), texts()),
            "points": DECIMALS,
            "tags": st.one_of(JSON_ANY, st.just({})),
            "attributes": st.one_of(JSON_ANY, st.just({})),
        }
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda r: r["id"],
)
#: source column -> Braze attribute
FIELDS = {
    "email": "email",
    "phone": "phone",
    "first_name": "first_name",
    "last_name": "last_name",
    "gender": "gender",
    "dob": "dob",
    "country": "country",
    "language": "language",
    "city": "home_city",
    "status": "masivo_status",
    "tier": "masivo_tier",
    "points": "masivo_points",
}


@EXAMPLES
@given(rows=CUSTOMER_ROWS)
@example(
    rows=[
        {"id": f"c{i}", "points": points, "attributes": attributes, "tags": tags}
        for i, (points, attributes, tags) in enumerate(
            [
                (Decimal("NaN"), HUGE, DEEPEST),
                (Decimal("Infinity"), DEEPEST, HUGE),
                (Decimal("-Infinity"), [1, 2], "tag"),
                (Decimal("1e400"), {"a": {"b": 1}, "a_b": 2}, {"t": {"nested": True}}),
            ]
        )
    ]
)
def test_customers_of_any_shape_are_sent_or_rejected_with_a_reason(rows, make_account, run_sync, emulator, db) -> None:
    account = _account(make_account)
    if "control" not in {r["id"] for r in rows}:
        rows = [*rows, {"id": "control", "email": "ok@example.com", "points": Decimal(5), "tags": {}, "attributes": {}}]
    columns = ["id", *FIELDS, "tags", "attributes"]
    with db.connection() as conn:
        for row in rows:
            values = [_jsonb(row[c]) if c in ("tags", "attributes") else row.get(c) for c in columns]
            conn.execute(
                f"INSERT INTO customers (account_id, {', '.join(columns)}) "
                f"VALUES (%s, {', '.join(['%s'] * (len(columns) - 2))}, %s::jsonb, %s::jsonb)",
                (account, *values),
            )

    runs = sync_caught_up(run_sync, db, account, "customers")

    assert all(r.status == "ok" for r in runs)
    rejected = _rejected(db, account, "customers")
    profiles = emulator.profiles(account)
    assert profiles["control"].attributes["email"] == "ok@example.com"  # never held back
    for row in rows:
        key = row["id"]
        if not key or len(key.encode()) > 987:  # Braze would refuse the external_id
            assert key not in profiles
            assert [s for s, _ in rejected[key]] == ["validate"]
            continue
        attrs = profiles[key].attributes if key in profiles else {}
        dropped = " ".join(reason for stage, reason in rejected.get(key, []) if stage == "field")
        for column, name in FIELDS.items():
            if row.get(column) is not None:
                # every non-null field went to Braze, or its drop is recorded with the reason
                assert name in attrs or f"field {name} dropped" in dropped, (column, name)
    assert emulator.stats(account).rejected_objects == 0


# -- purchases ------------------------------------------------------------------------------------

PRICES = st.one_of(
    st.none(),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**9), max_value=10**9),
    st.sampled_from([Decimal("NaN"), Decimal(0), Decimal("-0.01")]),
)
LINES = st.lists(
    st.fixed_dictionaries(
        {
            "sku": st.one_of(st.none(), texts()),
            "name": st.one_of(st.none(), texts()),
            "quantity": st.one_of(st.none(), st.integers(-5, 250), st.sampled_from([0, -1, 100_001, 2**31 - 1])),
            "unit_price": PRICES,
            "properties": st.one_of(st.none(), JSON_ANY),
        }
    ),
    min_size=1,
    max_size=3,
)
ORDERS = st.lists(
    st.fixed_dictionaries(
        {
            "customer": st.sampled_from(["c1", "missing", "deleted", ""]),
            "status": st.sampled_from(["FULFILLED", "FULFILLED", "FULFILLED", "PENDING", "CANCELLED"]),
            "currency": st.one_of(st.none(), st.sampled_from(["USD", "usd", "ZZZ", "€€€", "   ", "XTS", "EU"])),
            "lines": LINES,
        }
    ),
    min_size=1,
    max_size=4,
)


@EXAMPLES
@given(orders=ORDERS)
@example(
    orders=[
        {
            "customer": "c1",
            "status": "FULFILLED",
            "currency": "ZZZ",
            "lines": [{"sku": "A", "name": None, "quantity": 1, "unit_price": Decimal(1), "properties": None}],
        },
        {
            "customer": "c1",
            "status": "FULFILLED",
            "currency": None,
            "lines": [
                {"sku": "B", "name": "n", "quantity": -3, "unit_price": Decimal("NaN"), "properties": HUGE},
                {"sku": "C", "name": "n", "quantity": 0, "unit_price": Decimal(2), "properties": DEEPEST},
                {"sku": "D", "name": "n", "quantity": 250, "unit_price": Decimal("0.5"), "properties": None},
            ],
        },
    ]
)
def test_purchases_of_any_shape_are_sent_or_rejected_with_a_reason(orders, make_account, run_sync, emulator, db):
    account = _account(make_account)
    orders = [
        *orders,
        {
            "customer": "c1",
            "status": "FULFILLED",
            "currency": "USD",
            "lines": [{"sku": "SKU", "name": "ok", "quantity": 1, "unit_price": Decimal("9.99"), "properties": None}],
        },
    ]
    ids = [f"o{i}" for i in range(len(orders))]
    with db.connection() as conn:
        for cid in ("c1", "deleted", ""):
            conn.execute(
                "INSERT INTO customers (account_id, id, deleted_at) VALUES (%s, %s, %s)",
                (account, cid, "now()" if cid == "deleted" else None),
            )
        for oid, order in zip(ids, orders, strict=True):
            conn.execute(
                "INSERT INTO orders (account_id, id, customer_id, status, currency, fulfilled_at) "
                "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s = 'FULFILLED' THEN now() END)",
                (account, oid, order["customer"], order["status"], order["currency"], order["status"]),
            )
            for n, line in enumerate(order["lines"], start=1):
                conn.execute(
                    "INSERT INTO order_items (account_id, order_id, line_no, sku, name, quantity, unit_price, "
                    "properties) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
                    (
                        account,
                        oid,
                        n,
                        line["sku"],
                        line["name"],
                        line["quantity"],
                        line["unit_price"],
                        None if line["properties"] is None else _jsonb(line["properties"]),
                    ),
                )

    runs = sync_caught_up(run_sync, db, account, "purchases")

    assert all(r.status == "ok" for r in runs)
    rejected = _rejected(db, account, "purchases")
    bought = [p for profile in emulator.profiles(account).values() for p in profile.purchases]
    sent = {(p["properties"]["order_id"], p["properties"]["line_no"]) for p in bought}
    assert (ids[-1], 1) in sent  # nothing held the good order back
    refused = {order_of(k) for k in rejected}
    handled = {o for o, _ in sent} | refused
    assert len(set(ids) - handled) == sum(r.skipped for r in runs)  # the rest was skipped by rule
    for oid, order in zip(ids, orders, strict=True):
        if oid in {o for o, _ in sent}:  # an order that went: each of its lines went, or says why not
            for n in range(1, len(order["lines"]) + 1):
                assert (oid, n) in sent or line_key(oid, n) in rejected, (oid, n)
    assert emulator.stats(account).rejected_objects == 0
