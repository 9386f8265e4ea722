"""Each per-object rule of /users/track: one valid and one invalid case at least (docs/braze.md).

Every case is sent alone: a valid object gets 201 without errors, an invalid one 400 with one
error entry `{type, input_array, index: 0}` and nothing applied.
"""

from __future__ import annotations

import pytest

from masivo_braze_sync.emulator.validation import (
    ERR_EMAIL,
    ERR_EXTERNAL_ID_TOO_LARGE,
    ERR_ID_REQUIRED,
    ERR_MULTIPLE_IDS,
    ERR_QUANTITY,
    MSG_BAD_REQUEST,
    MSG_NO_VALID,
)

ANY = object()  # "rejected, whatever the wording"
T = "2024-05-01T12:00:00Z"
EXT = {"external_id": "c1"}
ALIAS = {"user_alias": {"alias_name": "n1", "alias_label": "crm"}}


def big_nested(kb: int) -> dict:
    # keys and strings within limits; only the total size varies
    return {f"k{i}": "x" * 250 for i in range(kb * 4)}


ATTRIBUTES = [
    # identifiers
    ("external_id", {**EXT}, None),
    ("external_id 987 bytes", {"external_id": "é" * 493 + "a"}, None),
    ("external_id 988 bytes", {"external_id": "é" * 494}, ERR_EXTERNAL_ID_TOO_LARGE),
    ("external_id empty", {"external_id": ""}, ANY),
    ("external_id not a string", {"external_id": 42}, ANY),
    ("external_id null", {"external_id": None}, ANY),
    ("no identifier", {"first_name": "Ana"}, ERR_ID_REQUIRED),
    ("two primary ids", {"external_id": "c1", "braze_id": "b1"}, ERR_MULTIPLE_IDS),
    ("external_id and alias", {**EXT, **ALIAS}, ERR_MULTIPLE_IDS),
    ("alias", {**ALIAS, "_update_existing_only": False}, None),
    ("alias without label", {"user_alias": {"alias_name": "n1"}}, ANY),
    ("braze_id", {"braze_id": "0123"}, None),
    ("braze_id empty", {"braze_id": ""}, ANY),
    ("email only", {"email": "ana@example.com"}, None),
    ("email only, bad", {"email": "ana@"}, ERR_EMAIL),
    ("phone only", {"phone": "+525512345678"}, None),
    ("primary plus email and phone", {**EXT, "email": "a@b.co", "phone": "+1"}, None),
    # standard fields
    ("email", {**EXT, "email": "ana.b+x@mail.example.com"}, None),
    ("email bad", {**EXT, "email": "ana at example.com"}, ERR_EMAIL),
    ("email no dot", {**EXT, "email": "ana@localhost"}, ERR_EMAIL),
    ("email null removes", {**EXT, "email": None}, None),
    ("dob", {**EXT, "dob": "1980-12-21"}, None),
    ("dob impossible", {**EXT, "dob": "1980-02-30"}, ANY),
    ("dob other format", {**EXT, "dob": "21/12/1980"}, ANY),
    ("dob with time", {**EXT, "dob": "1980-12-21T00:00:00"}, ANY),
    ("gender", {**EXT, "gender": "F"}, None),
    ("gender P", {**EXT, "gender": "P"}, None),
    ("gender null", {**EXT, "gender": None}, None),
    ("gender bad", {**EXT, "gender": "X"}, ANY),
    ("gender lowercase", {**EXT, "gender": "f"}, ANY),
    ("country", {**EXT, "country": "MX"}, None),
    # Braze maps what it can and stores null otherwise: never a refusal (user attributes object)
    ("country lowercase", {**EXT, "country": "mx"}, None),
    ("country alpha-3", {**EXT, "country": "MEX"}, None),
    ("country number", {**EXT, "country": 52}, ANY),
    ("phone", {**EXT, "phone": "+525512345678"}, None),
    ("phone number", {**EXT, "phone": 5512345678}, ANY),
    ("first_name 255", {**EXT, "first_name": "a" * 255}, None),
    ("first_name 256", {**EXT, "first_name": "a" * 256}, ANY),
    ("last_name number", {**EXT, "last_name": 7}, ANY),
    ("home_city", {**EXT, "home_city": "Monterrey"}, None),
    ("language", {**EXT, "language": "es"}, None),
    ("language list", {**EXT, "language": ["es"]}, ANY),
    ("email_subscribe", {**EXT, "email_subscribe": "opted_in"}, None),
    ("email_subscribe bad", {**EXT, "email_subscribe": "yes"}, "BAD_EMAIL_SUBSCRIPTION_STATE"),
    ("current_location bad", {**EXT, "current_location": {"latitude": 1}}, "BAD_LOCATION_UPDATE"),
    # control keys
    ("update only", {**EXT, "_update_existing_only": True}, None),
    ("update only not bool", {**EXT, "_update_existing_only": "yes"}, ANY),
    # custom attributes
    ("custom string 255", {**EXT, "tier": "g" * 255}, None),
    ("custom string 256", {**EXT, "tier": "g" * 256}, ANY),
    ("custom int", {**EXT, "points": 120}, None),
    ("custom float", {**EXT, "ratio": 0.25}, None),
    ("custom bool", {**EXT, "vip": True}, None),
    ("custom null", {**EXT, "vip": None}, None),
    ("custom date string", {**EXT, "joined": "2024-01-31T10:00:00Z"}, None),
    ("custom array", {**EXT, "tags": ["a", "b", 3]}, None),
    ("custom array with null", {**EXT, "tags": ["a", None]}, ANY),
    ("custom array long string", {**EXT, "tags": ["a" * 256]}, ANY),
    ("custom key 255", {**EXT, "k" * 255: 1}, None),
    ("custom key 256", {**EXT, "k" * 256: 1}, ANY),
    ("custom key $", {**EXT, "$points": 1}, ANY),
    ("custom key empty", {**EXT, "": 1}, ANY),
    ("inc", {**EXT, "points": {"inc": -5}}, None),
    ("inc not a number", {**EXT, "points": {"inc": "5"}}, ANY),
    ("inc float", {**EXT, "points": {"inc": 1.5}}, ANY),
    ("add remove", {**EXT, "tags": {"add": ["a"], "remove": ["b"]}}, None),
    ("add not a list", {**EXT, "tags": {"add": "a"}}, ANY),
    ("nested object", {**EXT, "pet": {"name": "Rex", "age": 3, "vax": {"$time": T}}}, None),
    ("nested empty object", {**EXT, "pet": {}}, None),
    ("nested key with dot", {**EXT, "pet": {"a.b": 1}}, ANY),
    ("nested key with $", {**EXT, "pet": {"$a": 1}}, ANY),
    ("nested key with space", {**EXT, "pet": {"a b": 1}}, ANY),
    ("nested bad $time", {**EXT, "pet": {"vax": {"$time": "soon"}}}, ANY),
    ("nested string 256", {**EXT, "pet": {"name": "r" * 256}}, ANY),
    ("nested 99 KB", {**EXT, "pet": big_nested(95)}, None),
    ("nested over 100 KB", {**EXT, "pet": big_nested(101)}, ANY),
    ("array of objects", {**EXT, "cars": [{"make": "VW"}, {"make": "Fiat"}]}, None),
    ("array of objects bad key", {**EXT, "cars": [{"ma.ke": "VW"}]}, ANY),
    ("array of objects $add", {**EXT, "cars": {"$add": [{"id": 1}]}}, None),
    (
        "array of objects $remove",
        {**EXT, "cars": {"$remove": [{"$identifier_key": "id", "$identifier_value": 1}]}},
        None,
    ),
    ("array of objects $update no object", {**EXT, "cars": {"$update": [{"$identifier_key": "id"}]}}, ANY),
]

EV = {**EXT, "name": "visit", "time": T}
EVENTS = [
    ("event", {**EV}, None),
    ("event by alias", {**ALIAS, "name": "visit", "time": T}, None),
    ("event by email", {"email": "a@b.co", "name": "visit", "time": T}, None),
    ("event no identifier", {"name": "visit", "time": T}, ERR_ID_REQUIRED),
    ("event two ids", {**EV, "braze_id": "b"}, ERR_MULTIPLE_IDS),
    ("name missing", {**EXT, "time": T}, ANY),
    ("name empty", {**EV, "name": ""}, ANY),
    ("name $", {**EV, "name": "$visit"}, ANY),
    ("name 255", {**EV, "name": "n" * 255}, None),
    ("name 256", {**EV, "name": "n" * 256}, ANY),
    ("name not a string", {**EV, "name": 5}, ANY),
    ("time missing", {**EXT, "name": "visit"}, ANY),
    ("time date only", {**EV, "time": "2024-05-01"}, None),
    ("time offset", {**EV, "time": "2024-05-01T12:00:00.123+02:00"}, None),
    ("time braze millis form", {**EV, "time": "2024-05-01T12:00:00:000Z"}, None),
    ("time words", {**EV, "time": "yesterday"}, ANY),
    ("time epoch number", {**EV, "time": 1714564800}, ANY),
    ("time impossible", {**EV, "time": "2024-02-30T00:00:00Z"}, ANY),
    ("app_id", {**EV, "app_id": "app-1"}, None),
    ("app_id number", {**EV, "app_id": 1}, ANY),
    ("properties", {**EV, "properties": {"store": "S1", "amount": 10.5, "ok": True}}, None),
    ("property null", {**EV, "properties": {"none": None}}, ANY),
    ("properties not an object", {**EV, "properties": ["a"]}, ANY),
    ("property key $", {**EV, "properties": {"$x": 1}}, ANY),
    ("property key time", {**EV, "properties": {"time": "x"}}, ANY),
    ("property key event_name", {**EV, "properties": {"event_name": "x"}}, ANY),
    ("property key empty", {**EV, "properties": {"": 1}}, ANY),
    ("property key 256", {**EV, "properties": {"k" * 256: 1}}, ANY),
    ("property string 255", {**EV, "properties": {"s": "s" * 255}}, None),
    ("property string 256", {**EV, "properties": {"s": "s" * 256}}, ANY),
    ("property nested", {**EV, "properties": {"cart": {"items": [{"sku": "A", "qty": 2}]}}}, None),
    ("property nested long string", {**EV, "properties": {"cart": {"sku": "s" * 256}}}, ANY),
    ("properties nested over 100 KB", {**EV, "properties": {"cart": big_nested(101)}}, ANY),
    ("300 properties accepted", {**EV, "properties": {f"p{i}": i for i in range(300)}}, None),
    ("update only not bool", {**EV, "_update_existing_only": 1}, ANY),
]

PU = {**EXT, "product_id": "sku-1", "currency": "USD", "price": 9.99, "time": T}
PURCHASES = [
    ("purchase", {**PU}, None),
    ("purchase integer price", {**PU, "price": 10}, None),
    ("refund: negative price", {**PU, "price": -5.5}, None),
    ("price missing", {k: v for k, v in PU.items() if k != "price"}, ANY),
    ("price string", {**PU, "price": "9.99"}, ANY),
    ("price bool", {**PU, "price": True}, ANY),
    ("product_id missing", {k: v for k, v in PU.items() if k != "product_id"}, ANY),
    ("product_id 255", {**PU, "product_id": "p" * 255}, None),
    ("product_id 256", {**PU, "product_id": "p" * 256}, ANY),
    ("product_id number", {**PU, "product_id": 12}, ANY),
    ("currency MXN", {**PU, "currency": "MXN"}, None),
    ("currency JPY", {**PU, "currency": "JPY"}, None),
    ("currency lowercase", {**PU, "currency": "usd"}, ANY),
    ("currency unknown", {**PU, "currency": "XYZ"}, ANY),
    ("currency withdrawn HRK", {**PU, "currency": "HRK"}, ANY),
    ("currency missing", {k: v for k, v in PU.items() if k != "currency"}, ANY),
    ("quantity 1", {**PU, "quantity": 1}, None),
    ("quantity 100", {**PU, "quantity": 100}, None),
    ("quantity 0", {**PU, "quantity": 0}, ERR_QUANTITY),
    ("quantity 101", {**PU, "quantity": 101}, ERR_QUANTITY),
    ("quantity float", {**PU, "quantity": 1.5}, ERR_QUANTITY),
    ("quantity string", {**PU, "quantity": "2"}, ERR_QUANTITY),
    ("time missing", {k: v for k, v in PU.items() if k != "time"}, ANY),
    ("time bad", {**PU, "time": "2024-13-01"}, ANY),
    ("properties", {**PU, "properties": {"store": "S1"}}, None),
    ("property key time", {**PU, "properties": {"time": 1}}, ANY),
    ("no identifier", {k: v for k, v in PU.items() if k != "external_id"}, ERR_ID_REQUIRED),
]


def _cases(array: str, cases: list) -> list:
    return [pytest.param(array, obj, expected, id=f"{array}: {name}") for name, obj, expected in cases]


@pytest.mark.parametrize(
    ("array", "obj", "expected"),
    _cases("attributes", ATTRIBUTES) + _cases("events", EVENTS) + _cases("purchases", PURCHASES),
)
def test_object_rule(client, ws, state, array, obj, expected) -> None:
    r = client.post("/users/track", json={array: [obj]})
    body = r.json()
    if expected is None:
        assert r.status_code == 201, body
        assert body == {"message": "success", f"{array}_processed": 1}
        return
    assert r.status_code == 400, body
    assert body["message"] == MSG_NO_VALID
    (error,) = body["errors"]
    assert error["input_array"] == array
    assert error["index"] == 0
    if expected is not ANY:
        assert error["type"] == expected
    assert state.profiles(ws.name) == {}
    assert state.stats(ws.name).rejected_objects == 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"attributes": [{"external_id": "c1", "x": NaN}]}',
        b'{"attributes": [{"external_id": "c1", "x": Infinity}]}',
        b'{"attributes": [{"external_id": "c1", "x": -Infinity}]}',
        b'{"attributes": [{"external_id": "c1", "x": 1e999}]}',
        b'{"attributes": [{"external_id": "c1"}',
        b"not json",
        b"",
        b'[{"external_id": "c1"}]',
        b'"attributes"',
        b'{"attributes": {"external_id": "c1"}}',
    ],
    ids=[
        "NaN",
        "Infinity",
        "-Infinity",
        "overflow",
        "truncated",
        "text",
        "empty",
        "array",
        "string",
        "not-array",
    ],
)
def test_unparsable_or_malformed_body_is_400_bad_request(client, ws, state, raw) -> None:
    r = client.post("/users/track", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == {"message": MSG_BAD_REQUEST}
    assert state.profiles(ws.name) == {}


@pytest.mark.parametrize("body", [{}, {"attributes": []}, {"other": [1]}])
def test_nothing_to_process_is_400(client, body) -> None:
    r = client.post("/users/track", json=body)
    assert r.status_code == 400
    assert r.json()["message"] == MSG_NO_VALID


def test_non_object_entries_are_rejected_per_object(client, ws, state) -> None:
    r = client.post("/users/track", json={"attributes": ["c1", {"external_id": "c2"}, None]})
    assert r.status_code == 201
    body = r.json()
    assert [(e["input_array"], e["index"]) for e in body["errors"]] == [("attributes", 0), ("attributes", 2)]
    assert body["attributes_processed"] == 1
    assert list(state.profiles(ws.name)) == ["c2"]
