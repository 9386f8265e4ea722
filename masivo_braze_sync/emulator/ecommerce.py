"""Validation of Braze's eCommerce recommended events (custom events named `ecommerce.*`).

Source of every rule: braze-inc/braze-docs,
`_docs/_user_guide/data/activation/custom_data/recommended_events/ecommerce_events.md`
(https://www.braze.com/docs/user_guide/data/activation/custom_data/recommended_events/ecommerce_events/),
summarised in docs/braze.md#ecommerce-recommended-events. Braze says an event whose required
property is missing or of the wrong type "may be rejected"; the emulator errs on the strict side
and refuses it, as it does for everything else. Pure and cheap, like validation.py.
"""

from __future__ import annotations

import math
from typing import Any

from masivo_braze_sync.iso4217 import CURRENCIES

# property types as the page's "Data type" column names them
STRING, FLOAT, INTEGER, OBJECT, ARRAY, OBJECTS = "String", "Float", "Integer", "Object", "Array", "Array of objects"

#: a product in `products` (cart_updated, checkout_started, order_placed/refunded/cancelled):
#: "product_id | Yes | String", "product_name | Yes | String", "variant_id | Yes | String",
#: "quantity | Yes | Integer", "price | Yes | Float", "image_url"/"product_url" "No | String",
#: "metadata | No | Object", "sku | No | String"
PRODUCT: dict[str, tuple[bool, str]] = {
    "product_id": (True, STRING),
    "product_name": (True, STRING),
    "variant_id": (True, STRING),
    "quantity": (True, INTEGER),
    "price": (True, FLOAT),
    "image_url": (False, STRING),
    "product_url": (False, STRING),
    "metadata": (False, OBJECT),
    "sku": (False, STRING),
}

#: the order events' common properties: "order_id | Yes | String", "total_value | Yes | Float",
#: "currency | Yes | String", "total_discounts | No | Float", "discounts | No | Array of objects",
#: "products | Yes | Array of objects", "source | Yes | String", "metadata | No | Object"
_ORDER: dict[str, tuple[bool, str]] = {
    "order_id": (True, STRING),
    "total_value": (True, FLOAT),
    "currency": (True, STRING),
    "total_discounts": (False, FLOAT),
    "discounts": (False, OBJECTS),
    "products": (True, OBJECTS),
    "source": (True, STRING),
    "metadata": (False, OBJECT),
}

#: event name -> its properties (required?, type)
EVENTS: dict[str, dict[str, tuple[bool, str]]] = {
    # "product_id | Yes", "product_name | Yes", "variant_id | Yes", "price | Yes | Float",
    # "currency | Yes", "source | Yes"
    "ecommerce.product_viewed": {
        **{k: v for k, v in PRODUCT.items() if k != "quantity"},
        "currency": (True, STRING),
        "source": (True, STRING),
    },
    # "cart_id | Yes | String", "total_value | Yes | Float", "currency | Yes", "products | Yes | Array"
    "ecommerce.cart_updated": {
        "cart_id": (True, STRING),
        "total_value": (True, FLOAT),
        "currency": (True, STRING),
        "products": (True, OBJECTS),
        "source": (True, STRING),
        "metadata": (False, OBJECT),
    },
    # "checkout_id | Yes | String", "cart_id | No | String", "checkout_url | No | String"
    "ecommerce.checkout_started": {
        "checkout_id": (True, STRING),
        "cart_id": (False, STRING),
        "total_value": (True, FLOAT),
        "currency": (True, STRING),
        "products": (True, OBJECTS),
        "source": (True, STRING),
        "metadata": (False, OBJECT),
        "checkout_url": (False, STRING),
    },
    # "cart_id | No | String" besides the order properties
    "ecommerce.order_placed": {**_ORDER, "cart_id": (False, STRING)},
    "ecommerce.order_refunded": _ORDER,
    # "cancel_reason | Yes | String: Reason why the order was cancelled."
    "ecommerce.order_cancelled": {**_ORDER, "cancel_reason": (True, STRING)},
}


def _is(kind: str, v: Any) -> bool:
    t = type(v)
    if kind == STRING:
        return t is str
    if kind == FLOAT:  # JSON has one number type: the page's own examples send `"price": 85`
        return t is int or (t is float and math.isfinite(v))
    if kind == INTEGER:
        return t is int
    if kind == OBJECT:
        return t is dict
    if kind == ARRAY:
        return t is list
    return t is list and all(type(x) is dict for x in v)  # OBJECTS


def _fields_error(obj: dict[str, Any], schema: dict[str, tuple[bool, str]], where: str) -> str | None:
    for name, (required, kind) in schema.items():
        if name not in obj:
            if required:
                return f"{where}: '{name}' is required"
            continue
        if not _is(kind, obj[name]):
            return f"{where}: '{name}' must be of type {kind}"
    return None


def ecommerce_error(name: str, properties: Any) -> str | None:
    """The first rule an `ecommerce.*` event breaks, or None (event `name` already a valid string)."""
    schema = EVENTS.get(name)
    if schema is None:
        # "eCommerce event names are case-sensitive and must match exactly"
        return f"'{name[:64]}' is not an eCommerce recommended event"
    if type(properties) is not dict:
        return f"{name}: 'properties' is required"
    err = _fields_error(properties, schema, name)
    if err is not None:
        return err
    # currency "in ISO 4217 format" (product_viewed, cart_updated; the order events say "Currency in
    # which the cart is valued", and non-USD values are converted at the day's rate)
    if properties["currency"] not in CURRENCIES:
        return f"{name}: 'currency' is not an ISO 4217 code"
    products = properties.get("products")
    if products is not None:
        # cart_updated: "The products array isn't empty"; order_refunded: "If a partial refund is
        # issued and there is no product_id ... provide a generalized product_id" (never empty)
        if not products:
            return f"{name}: 'products' is empty"
        for i, product in enumerate(products):
            err = _fields_error(product, PRODUCT, f"{name}: products[{i}]")
            if err is not None:
                return err
    return None
