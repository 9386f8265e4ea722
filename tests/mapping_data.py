"""Seeded, varied frames for the customers and purchases mappings, shaped like their extracts.

Used by the golden test (tests/core/test_mapping_golden.py: the mappings' output must stay byte
for byte what it was) and by the mapping benchmark (benchmarks/mapping.py). Everything derives
from `random.Random(seed)`, so one seed gives one dataset. Rows carry the edge cases each rule
exists for: nulls, bad emails, phones with and without a country, unicode, long strings, nested
and colliding custom attributes, deleted customers; refunds, line edits, cancellations,
interrupted attempts and several currencies for orders.

A second pass (`customers_runs`, `purchases_runs`) feeds what the first one would have stored
(hashes, ledger rows, a planned batch) back in with changed rows: an update run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson
import polars as pl

from masivo_braze_sync.entities.base import AccountContext, Prepared

CUSTOMER_SCHEMA = {
    "key": pl.String,
    "active": pl.Boolean,
    "email": pl.String,
    "phone": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "gender": pl.String,
    "dob": pl.String,
    "country": pl.String,
    "language": pl.String,
    "city": pl.String,
    "status": pl.String,
    "tier": pl.String,
    "points": pl.String,
    "tags": pl.String,
    "attributes": pl.String,
    "sent_before": pl.Boolean,
    "field_hashes": pl.String,
}
ORDER_SCHEMA = {
    "key": pl.String,
    "present": pl.Boolean,
    "customer_id": pl.String,
    "status": pl.String,
    "currency": pl.String,
    "fulfilled_at": pl.String,
    "reversed_at": pl.String,
    "cancelled_at": pl.String,
    "updated_at": pl.String,
    "deleted_at": pl.String,
    "read_at": pl.String,
    "customer_state": pl.String,
    "lines": pl.String,
    "sent": pl.String,
    "prior": pl.String,
    "esent": pl.String,
    "eprior": pl.String,
}

LONG = "x" * 256
UNICODE = ["Zoë", "Bogotá", "Łukasz", "東京", "José 🎉", "Ñandú", "\u200bzero"]

EMAILS = [
    None,
    "ok{i}@example.com",
    "  Spaced{i}@Example.COM  ",
    "no-at-sign{i}",
    "a@b",
    "two@@example.com",
    "josé{i}@exämple.com",
    "x" * 250 + "@e.com",
    "",
    "trailing.dot{i}@example.",
]
PHONES = [
    None,
    "+57 300 123 {i4}",
    "300 123 {i4}",
    "(650) 253-{i4}",
    "+1 650 253 0000",
    "12345",
    "not a phone",
    "+44 20 7946 {i4}",
    "",
    "  +57 (601) 555-{i4} ",
    "9" * 300,
]
GENDERS = [None, "male", " FEMALE ", "M", "f", "Other", "n", "P", "x", "", "unknown"]
DOBS = [None, "1990-05-17", "1899-12-31", "1900-01-01", "2199-01-01", "2001-02-28", "1975-11-30"]
COUNTRIES = [None, "co", " US ", "CO", "MX", "XX", "Colombia", "", "gb", "br"]
LANGUAGES = [None, "es-CO", "en_US", "pt", "xx", "", "EN", "es", "fr-ca", "zz-top"]
STATUSES = [None, "ACTIVE", "INACTIVE", "BLOCKED", LONG]
TIERS = [None, "SILVER", "GOLD", "PLATINUM", "Ümlaut tier"]
POINTS = [None, "0", "1200", "12.5", "-3", "1.000", "0.1", "123456789012345678901234567890", "NaN", "Infinity", "1e400"]


def _attributes(r: random.Random, i: int) -> str | None:
    choice = r.randrange(16)
    if choice == 0:
        return None
    if choice == 1:
        return "{}"
    if choice == 2:
        return "[1, 2]"  # not an object
    if choice == 3:
        return '{"big": 1e400}'  # orjson cannot read it
    value: dict[str, Any] = {
        "segment": r.choice(["new", "loyal", "lapsed", None]),
        "prefs": {"sms": r.random() < 0.5, "store": r.randrange(40), "deep": {"er": r.choice(UNICODE)}},
    }
    if choice == 4:
        value |= {"email": "x@y.z", "attr_email": "collides", "_private": 1, "masivo_points": 3, "time": "t"}
    if choice == 5:
        value |= {"list": [1, 1, None, "a", True, 1.0, 2], "long_list": list(range(30)), "empty": []}
    if choice == 6:
        value |= {"objs": [{"sku": "a"}, {"sku": "b", "n": None}], "$source": "masivo", "$": 1, "": 2}
    if choice == 7:
        deep: Any = "bottom"
        for _ in range(34):
            deep = {"d": deep}
        value |= {"deep": deep}
    if choice == 8:
        value |= {"k" * 260: 1, "long_value": LONG, "a_b": 1, "a": {"b": 2}}
    if choice == 9:
        value |= {"ünï": "cödé", "float": 1e308, "neg": -0.0, "null": None}
    if choice == 10:
        value |= {"nested_list": [[1, 2], [3]], "mixed": [1, {"a": 2}], "str_list": [LONG, "ok"]}
    if choice == 11:
        value = {f"key{j}": j for j in range(r.randrange(1, 40))}
    if choice == 13:  # beyond 64 bits: what jsonb may hold and orjson reads as a float
        return orjson.dumps(value).decode()[:-1] + ', "bigint": 1180591620717411303424}'
    if choice == 12:
        value |= {"phone": "+1", "external_id": "spoof", "alias_name": "x", "image_url": "u", "push_token_import": 1}
    return orjson.dumps(value).decode()


def _tags(r: random.Random) -> str | None:
    choice = r.randrange(10)
    if choice == 0:
        return None
    if choice == 1:
        return "{}"
    if choice == 2:
        return "null"
    if choice == 3:
        return '"just a string"'
    if choice == 4:
        return orjson.dumps({"vip": True, "nested": {"a": 1}, "list": [1], "k" * 250: 1, "long": LONG}).decode()
    return orjson.dumps(
        {"vip": r.random() < 0.3, "score": r.randrange(100), "name": r.choice(UNICODE), "ratio": 0.5, "none": None}
    ).decode()


def _pick(r: random.Random, options: list[Any], i: int) -> Any:
    value = r.choice(options)
    if isinstance(value, str):
        return value.replace("{i}", str(i)).replace("{i4}", f"{i % 10000:04d}")
    return value


def customer_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` customer rows as the extract reads them (never sent before)."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        key = f"c{i}"
        if i % 97 == 13:
            key = ""
        elif i % 97 == 14:
            key = "k" * 990
        elif i % 97 == 15:
            key = f"クライアント{i}"
        rows.append(
            {
                "key": key,
                "active": r.random() > 0.08,
                "email": _pick(r, EMAILS, i),
                "phone": _pick(r, PHONES, i),
                "first_name": r.choice([None, "Member", LONG, *UNICODE]),
                "last_name": r.choice([None, f"N{i}", "", *UNICODE]),
                "gender": r.choice(GENDERS),
                "dob": r.choice(DOBS),
                "country": r.choice(COUNTRIES),
                "language": r.choice(LANGUAGES),
                "city": r.choice([None, "Medellín", LONG, "Cali"]),
                "status": r.choice(STATUSES),
                "tier": r.choice(TIERS),
                "points": r.choice(POINTS),
                "tags": _tags(r),
                "attributes": _attributes(r, i),
                "sent_before": False,
                "field_hashes": None,
            }
        )
    return rows


def customers_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows as the extract's frame."""
    return pl.DataFrame(rows, schema=CUSTOMER_SCHEMA, orient="row")


def customers_update(rows: list[dict[str, Any]], state: pl.DataFrame, seed: int) -> list[dict[str, Any]]:
    """The same customers after a first delivery (`state` stored) and some edits, deletions, re-creations."""
    r = random.Random(seed)
    stored = {k: h for k, h, deleted in state.iter_rows() if not deleted}
    out = []
    for row in rows:
        row = dict(row)
        hashes = stored.get(row["key"])
        row["sent_before"] = hashes is not None
        row["field_hashes"] = hashes
        roll = r.random()
        if roll < 0.15:
            row["active"] = False  # deleted since
        elif roll < 0.25:
            row["active"] = True  # (re)created
        if r.random() < 0.5:
            fresh = customer_rows(1, r.randrange(10**9))[0]
            for name in r.sample(sorted(CUSTOMER_SCHEMA), 4):
                if name not in ("key", "active", "sent_before", "field_hashes"):
                    row[name] = fresh[name]
        out.append(row)
    r.shuffle(out)
    return out


# -- purchases ------------------------------------------------------------------------------------

T0 = "2026-11-{d:02d}T{h:02d}:30:05.123Z"
CURRENCIES = [None, "USD", "usd", "COP", "EUR", " MXN ", "XXX", "ABC", "JPY"]
PRICES = ["10.00", "0", "1999.99", "12.345", "-5", "1E+3", "NaN", None, "0.00", "99999999.99"]
QUANTITIES = [1, 1, 2, 3, 100, 250, 0, -1, None, 100001, 17]


def _props(r: random.Random) -> Any:
    choice = r.randrange(12)
    if choice == 0:
        return None
    if choice == 1:
        return {}
    if choice == 2:
        return "not an object"
    if choice == 3:
        return {"order_id": "x", "line_order_id": "y"}  # collides once renamed
    if choice == 4:
        return {"order_id": "x", "purchase_id": "p", "product_name": "n"}
    if choice == 5:
        return {f"p{j}": j for j in range(300)}
    if choice == 6:
        return {"note": LONG}
    if choice == 7:
        return {"$src": "pos", "time": "t", "event_name": "e", "with space": 1, "dot.key": 2}
    return {
        "color": r.choice(["red", "blue", "verde", "青"]),
        "size": {"eu": r.randrange(34, 46), "us": None},
        "tags": ["a", "b"],
        "gift": r.random() < 0.2,
    }


def _line(r: random.Random, ln: int) -> dict[str, Any]:
    sku = r.choice([f"SKU-{r.randrange(40)}", f"SKU-{r.randrange(40)}", "", None, LONG, "ñ-sku"])
    return {
        "line_no": ln,
        "sku": sku,
        "name": r.choice([None, f"Product {ln}", "", LONG, "Café ☕"]),
        "quantity": r.choice(QUANTITIES),
        "unit_price": r.choice(PRICES),
        "properties": _props(r),
    }


def _good_line(r: random.Random, ln: int) -> dict[str, Any]:
    return {
        "line_no": ln,
        "sku": f"SKU-{r.randrange(40)}",
        "name": f"Product {ln}",
        "quantity": r.choice([1, 2, 3, 150]),
        "unit_price": r.choice(["10.00", "1999.99", "0.5"]),
        "properties": {"color": "red"},
    }


def _ts(r: random.Random) -> str:
    return T0.format(d=r.randrange(1, 29), h=r.randrange(24))


def order_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` changed orders as the extract reads them (nothing sent before)."""
    r = random.Random(seed)
    rows = []
    for i in range(n):
        present = r.random() > 0.05
        status = r.choice(["FULFILLED"] * 6 + ["PENDING", "REVERSED", "CANCELLED", None])
        nlines = r.choice([0, 1, 2, 2, 3, 5])
        maker = _good_line if r.random() < 0.6 else _line
        lines = [maker(r, ln) for ln in range(1, nlines + 1)]
        if r.random() < 0.05:
            lines_text = '[{"line_no": 1, "sku": "a", "quantity": 1, "unit_price": "1", "properties": {"x": 1e400}}]'
        else:
            lines_text = orjson.dumps(lines).decode() if lines else None
        key = f"o{i}"
        if i % 101 == 7:
            key = "o" * 300
        elif i % 101 == 8:
            key = f"ord/with/slash/{i}"
        rows.append(
            {
                "key": key,
                "present": present,
                "customer_id": r.choice([f"c{r.randrange(500)}"] * 8 + ["", "k" * 990]),
                "status": status if present else None,
                "currency": r.choice(CURRENCIES),
                "fulfilled_at": _ts(r) if status == "FULFILLED" or r.random() < 0.3 else None,
                "reversed_at": _ts(r) if status == "REVERSED" and r.random() < 0.8 else None,
                "cancelled_at": _ts(r) if status == "CANCELLED" and r.random() < 0.8 else None,
                "updated_at": _ts(r) if r.random() < 0.9 else None,
                "deleted_at": _ts(r),
                "read_at": "2026-11-30T12:00:00.000Z",
                "customer_state": r.choice(["active"] * 10 + ["deleted", "missing"]),
                "lines": lines_text if present else None,
                "sent": None,
                "prior": None,
                "esent": None,
                "eprior": None,
            }
        )
    return rows


def orders_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows as the extract's frame."""
    return pl.DataFrame(rows, schema=ORDER_SCHEMA, orient="row")


def _ledgers(state: pl.DataFrame) -> tuple[dict[str, list], dict[str, list]]:
    """Per order, the purchase_lines and order_events rows the extract would read after `state` landed."""
    sides: dict[tuple[str, int, str], dict[str, Any]] = {}
    events: dict[str, list] = {}
    for s in state.iter_rows(named=True):
        if s["event"] is not None:
            events.setdefault(s["order_id"], []).append(
                {k: s[k] for k in ("key", "event", "customer_id", "currency", "time", "reason")}
                | {"lines": orjson.loads(s["lines"])}
            )
            continue
        side = sides.setdefault(
            (s["order_id"], s["line_no"], s["sign"]),
            {k: s[k] for k in ("line_no", "sign", "customer_id", "product_id", "currency", "unit_price", "time")}
            | {"split": {}},
        )
        side["split"][str(s["part"])] = s["quantity"]
    sent: dict[str, list] = {}
    for (order_id, _, _), side in sides.items():
        sent.setdefault(order_id, []).append(side)
    return sent, events


def orders_update(rows: list[dict[str, Any]], objects: pl.DataFrame, state: pl.DataFrame, seed: int) -> list[dict]:
    """The same orders after the first pass: most delivered (ledgers filled), some only planned (an
    interrupted attempt), and since then reversals, cancellations, deletions, line edits and additions."""
    r = random.Random(seed)
    sent, events = _ledgers(state)
    planned: dict[str, list[str]] = {}
    for key in objects["key"].to_list():
        planned.setdefault(key.split("/", 1)[0] if "/ecommerce." in key else key.rsplit("/", 3)[0], []).append(key)
    out = []
    for row in rows:
        row = dict(row)
        oid = row["key"]
        if r.random() < 0.2 and oid in planned:  # interrupted: nothing recorded, the attempt's keys known
            statuses = ["landed", "maybe", "refused", "planned"]
            prior = {k: r.choice(statuses) for k in planned[oid]}
            row["prior"] = orjson.dumps({k: v for k, v in prior.items() if "/ecommerce." not in k}).decode()
            row["eprior"] = orjson.dumps({k: v for k, v in prior.items() if "/ecommerce." in k}).decode()
            row["prior"] = None if row["prior"] == "{}" else row["prior"]
            row["eprior"] = None if row["eprior"] == "{}" else row["eprior"]
        else:
            sides = sent.get(oid, [])
            if sides and r.random() < 0.15:  # reversed earlier (the reversal is in the ledger too)
                sides = sides + [s | {"sign": "-", "unit_price": f"-{s['unit_price']}"} for s in sides]
            row["sent"] = orjson.dumps(sides).decode() if sides else None
            row["esent"] = orjson.dumps(events[oid]).decode() if oid in events else None
        roll = r.random()
        if roll < 0.15:
            row["status"], row["reversed_at"] = "REVERSED", _ts(r) if r.random() < 0.8 else None
        elif roll < 0.25:
            row["status"], row["cancelled_at"] = "CANCELLED", _ts(r) if r.random() < 0.8 else None
        elif roll < 0.32:
            row["present"], row["status"], row["lines"] = False, None, None
        elif roll < 0.5 and row["lines"] and row["present"]:
            try:
                lines = orjson.loads(row["lines"])
            except orjson.JSONDecodeError:
                lines = []
            if lines and r.random() < 0.5:
                lines.pop(r.randrange(len(lines)))  # a line deleted
            if lines and r.random() < 0.5:
                lines[0]["quantity"] = (lines[0]["quantity"] or 0) + 1  # edited
            lines.append(_good_line(r, 9))  # added
            row["lines"] = orjson.dumps(lines).decode()
        elif roll < 0.6:
            row["status"] = "PENDING"
        elif roll < 0.65:
            row["currency"] = "EUR"
        out.append(row)
    r.shuffle(out)
    return out


# -- runs -------------------------------------------------------------------------------------------

CUSTOMER_CONTEXTS = [
    AccountContext("acct", "USD", {"sync_customers_create": True, "sync_customers_update": True,
                                   "sync_customers_delete": True, "sync_customer_tags": True}),
    AccountContext("acct", "USD", {"sync_customers_create": False, "sync_customers_update": True,
                                   "sync_customers_delete": True, "sync_customer_tags": False}),
    AccountContext("acct", "USD", {"sync_customers_create": True, "sync_customers_update": False,
                                   "sync_customers_delete": False, "sync_customer_tags": True}),
]  # fmt: skip
ORDER_CONTEXTS = [
    AccountContext("acct", "COP", {}, "purchases"),
    AccountContext("acct", "", {"sync_customers_create": False}, "purchases"),
    AccountContext("acct", "USD", {}, "ecommerce"),
    AccountContext("acct", "USD", {}, "both"),
]


def clean_customer_rows(n: int) -> list[dict[str, Any]]:
    """`n` new customers with nothing to drop (the usual first run)."""
    return [
        {
            "key": f"clean-{i}", "active": True, "email": f"m{i}@example.com",
            "phone": f"+57 300 {i:03d} {i:04d}" if i % 2 else None, "first_name": "Member", "last_name": f"N{i}",
            "gender": (None, "F", "male")[i % 3], "dob": None, "country": "CO", "language": "es", "city": None,
            "status": None, "tier": ("SILVER", "GOLD")[i % 2], "points": str(i * 7), "tags": '{"vip": true}',
            "attributes": orjson.dumps({"prefs": {"sms": i % 2 == 0}, "segment": "new", "none": None}).decode(),
            "sent_before": False, "field_hashes": None,
        }
        for i in range(n)
    ]  # fmt: skip


def play_customers(entity: Any, n: int, seed: int) -> Iterator[tuple[str, Prepared, Prepared]]:
    """Validate and transform the seeded customers under each context: a first run, then an update
    run over what the first run under the first context stored."""
    clean = customers_frame(clean_customer_rows(50))
    for c, ctx in enumerate(CUSTOMER_CONTEXTS):
        valid = entity.validate(clean, ctx)
        yield f"customers ctx{c} clean", valid, entity.transform(valid.frame, ctx)
    rows = customer_rows(n, seed)
    stored = None
    for c, ctx in enumerate(CUSTOMER_CONTEXTS):
        valid = entity.validate(customers_frame(rows), ctx)
        out = entity.transform(valid.frame, ctx)
        stored = out.state if stored is None else stored
        yield f"customers ctx{c} first", valid, out
    for c, ctx in enumerate(CUSTOMER_CONTEXTS):
        valid = entity.validate(customers_frame(customers_update(rows, stored, seed + c)), ctx)
        yield f"customers ctx{c} update", valid, entity.transform(valid.frame, ctx)


def play_purchases(entity: Any, n: int, seed: int) -> Iterator[tuple[str, Prepared, Prepared]]:
    """Validate and transform the seeded orders under each context: a first run, then an update run
    over what the first run under the last context (purchases and eCommerce events) planned."""
    rows = order_rows(n, seed)
    firsts = []
    for c, ctx in enumerate(ORDER_CONTEXTS):
        valid = entity.validate(orders_frame(rows), ctx)
        out = entity.transform(valid.frame, ctx)
        firsts.append(out)
        yield f"purchases ctx{c} first", valid, out
    for c, ctx in enumerate(ORDER_CONTEXTS):
        again = orders_frame(orders_update(rows, firsts[-1].frame, firsts[-1].state, seed + c))
        valid = entity.validate(again, ctx)
        yield f"purchases ctx{c} update", valid, entity.transform(valid.frame, ctx)


def _frame(df: pl.DataFrame | None) -> list[Any] | None:
    if df is None:
        return None
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in df.iter_rows()]


def outcome(valid: Prepared, out: Prepared) -> dict[str, Any]:
    """Everything a run produces, in order, as JSON-ready values (bodies as their text)."""
    return {
        "valid_keys": valid.frame["key"].to_list(),
        "valid_action": valid.frame["action"].to_list() if "action" in valid.frame.columns else None,
        "valid_rejected": _frame(valid.rejected),
        "valid_skipped": sorted(valid.skipped.items()),
        "valid_skipped_keys": _frame(valid.skipped_keys),
        "objects": _frame(out.frame),
        "objects_schema": [str(t) for t in out.frame.schema.dtypes()],
        "rejected": _frame(out.rejected),
        "skipped": sorted(out.skipped.items()),
        "state": _frame(out.state),
        "state_columns": out.state.columns if out.state is not None else None,
        "metrics": sorted(out.metrics.items()),
    }
