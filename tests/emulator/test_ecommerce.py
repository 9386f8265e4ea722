"""eCommerce recommended events: the emulator refuses what Braze's schema does not allow.

Braze's page: braze-inc/braze-docs `recommended_events/ecommerce_events.md`
(docs/braze.md#ecommerce-recommended-events). Each case is sent alone over HTTP: a valid event
gets 201 and is stored, an invalid one 400 with one error entry naming the rule, nothing applied.
"""

from __future__ import annotations

import copy

import pytest

T = "2024-01-15T09:35:20Z"
PRODUCT = {"product_id": "SKU-1", "product_name": "Headphones", "variant_id": "SKU-1", "quantity": 1, "price": 199.98}
PLACED = {
    "external_id": "c1",
    "name": "ecommerce.order_placed",
    "time": T,
    "properties": {
        "order_id": "o1",
        "total_value": 199.98,
        "currency": "USD",
        "products": [PRODUCT | {"metadata": {"line_no": 1, "color": "black"}}],
        "source": "masivo",
    },
}


def placed(**props) -> dict:
    event = copy.deepcopy(PLACED)
    for key, value in props.items():
        if value is DROP:
            del event["properties"][key]
        else:
            event["properties"][key] = value
    return event


DROP = object()

CASES = [
    ("valid order_placed", placed(), None),
    ("integer price and total (JSON numbers)", placed(total_value=85, products=[PRODUCT | {"price": 85}]), None),
    ("order_id missing", placed(order_id=DROP), "'order_id' is required"),
    ("order_id not a string", placed(order_id=17), "'order_id' must be of type String"),
    ("total_value missing", placed(total_value=DROP), "'total_value' is required"),
    ("total_value a string", placed(total_value="199.98"), "'total_value' must be of type Float"),
    ("currency missing", placed(currency=DROP), "'currency' is required"),
    ("currency not ISO 4217", placed(currency="usd"), "'currency' is not an ISO 4217 code"),
    ("source missing", placed(source=DROP), "'source' is required"),
    ("products missing", placed(products=DROP), "'products' is required"),
    ("products not an array of objects", placed(products=["SKU-1"]), "'products' must be of type Array of objects"),
    ("products empty", placed(products=[]), "'products' is empty"),
    ("product without variant_id", placed(products=[{**PRODUCT, "variant_id": None} | {}]), "must be of type"),
    (
        "product quantity not an integer",
        placed(products=[PRODUCT | {"quantity": 1.5}]),
        "products[0]: 'quantity' must be of type Integer",
    ),
    ("product price missing", placed(products=[{k: v for k, v in PRODUCT.items() if k != "price"}]), "'price'"),
    ("product metadata not an object", placed(products=[PRODUCT | {"metadata": "x"}]), "'metadata' must be"),
    ("metadata not an object", placed(metadata=[1]), "'metadata' must be of type Object"),
    ("no properties", {k: v for k, v in PLACED.items() if k != "properties"}, "'properties' is required"),
    ("unknown eCommerce name", PLACED | {"name": "ecommerce.orderPlaced"}, "not an eCommerce recommended event"),
    ("cancelled without cancel_reason", PLACED | {"name": "ecommerce.order_cancelled"}, "'cancel_reason' is required"),
    (
        "cancelled with cancel_reason",
        placed(cancel_reason="CANCELLED") | {"name": "ecommerce.order_cancelled"},
        None,
    ),
    ("refunded", PLACED | {"name": "ecommerce.order_refunded"}, None),
    ("a custom event of another name is free-form", {**PLACED, "name": "ecommerce_like", "properties": {}}, None),
]


@pytest.mark.parametrize(("event", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ecommerce_event_rules(client, ws, state, event: dict, error: str | None) -> None:
    r = client.post("/users/track", json={"events": [event]})
    stored = state.profiles(ws.name).get("c1")
    if error is None:
        assert r.status_code == 201, r.text
        assert "errors" not in r.json()
        assert [e["name"] for e in stored.events] == [event["name"]]
    else:
        assert r.status_code == 400, r.text
        (entry,) = r.json()["errors"]
        assert error in entry["type"]
        assert (entry["input_array"], entry["index"]) == ("events", 0)
        assert stored is None
