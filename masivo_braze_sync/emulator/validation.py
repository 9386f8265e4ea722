"""Per-object validation of `/users/track` and `/users/delete` bodies (docs/braze.md#what-the-emulator-checks).

The emulator is the referee in tests, so it rejects what real Braze would reject and, where
Braze's behaviour is undocumented, errs on the strict side: a client that passes here sends
nothing Braze could refuse. Where Braze documents that it accepts something (an unrecognised
`country` is stored as null; `.` and spaces in event property keys), the emulator accepts it
too: being stricter than Braze would hide real behaviour. Each rule's source is in
docs/braze.md#what-the-emulator-checks. Everything here is pure (no state, no I/O) and cheap; the hot path
runs it for up to 75 objects per request at about 1,000 requests per second, so type checks use
`type(x) is ...` and regexes are compiled once at import.

Error `type` strings follow the shapes observed from Braze where one is known
(docs/braze.md#request-and-response-format); the others are this emulator's own wording.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.emulator.ecommerce import ecommerce_error
from masivo_braze_sync.iso4217 import CURRENCIES

ARRAYS = ("attributes", "events", "purchases")
PRIMARY_IDS = ("external_id", "user_alias", "braze_id")
#: keys that identify the user and are never written as profile fields or billed
ID_KEYS = frozenset(PRIMARY_IDS)
#: control keys of the attributes object (docs/braze.md#user-attributes-object); not profile fields, not billed
CONTROL_KEYS = frozenset({"_update_existing_only", "_merge_objects", "push_token_import"})

MAX_EXTERNAL_ID_BYTES = BRAZE.external_id_bytes
MAX_STRING = BRAZE.string_chars
MAX_NESTED_BYTES = 100 * 1024
MAX_EVENT_PROPERTIES = BRAZE.event_properties

# Messages -------------------------------------------------------------------------------------
MSG_BAD_REQUEST = "Bad Request"
MSG_TOO_MANY = "Max Input Length Exceeded"
MSG_NO_VALID = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."

ERR_ID_REQUIRED = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
ERR_MULTIPLE_IDS = "only one of 'external_id', 'braze_id' or 'user_alias' may be provided"
ERR_EXTERNAL_ID = "'external_id' is not valid"
ERR_EXTERNAL_ID_TOO_LARGE = "EXTERNAL_USER_ID_TOO_LARGE"
ERR_USER_ALIAS = "'user_alias' is not valid"
ERR_BRAZE_ID = "'braze_id' is not valid"
ERR_EMAIL = "EMAIL_BAD_FORMAT"
ERR_PHONE = "'phone' is not valid"
ERR_NOT_OBJECT = "object is not valid"
ERR_UPDATE_ONLY = "'_update_existing_only' is not valid"
ERR_QUANTITY = "'quantity' is not valid"

# Reference data -------------------------------------------------------------------------------

#: ISO 4217 codes a purchase `currency` may carry: `CURRENCIES`, imported from the core's
#: `masivo_braze_sync.iso4217` (withdrawn codes such as HRK, SLL, CUC, ZWL are rejected on purpose).

GENDERS = frozenset({"M", "F", "O", "N", "P"})
SUBSCRIPTION_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
GROUP_STATES = frozenset({"subscribed", "unsubscribed"})
RESERVED_PROPERTY_KEYS = frozenset({"time", "event_name"})

# Deliberately simple: one "@", something on each side, a dot in the domain, no whitespace.
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_DOB_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_email(value: object) -> bool:
    """True for a string that looks like an email address and fits Braze's 255 characters."""
    return type(value) is str and len(value) <= MAX_STRING and _EMAIL_RE.fullmatch(value) is not None


def is_time(value: object) -> bool:
    """True for an ISO 8601 date or date-time string (Braze's `time` fields, docs/braze.md#event-object)."""
    if type(value) is not str or not value:
        return False
    try:
        # Python 3.11 accepts the full ISO 8601 family, 'Z', and Braze's `HH:mm:ss:SSSZ` form.
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_dob(value: object) -> bool:
    if type(value) is not str or _DOB_RE.fullmatch(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _short_str(value: object) -> bool:
    return type(value) is str and len(value) <= MAX_STRING


# Identifiers ----------------------------------------------------------------------------------


def identify(obj: dict[str, Any]) -> tuple[str | None, Any]:
    """Find the object's user identifier (docs/braze.md#request-and-response-format).

    Returns `(error, None)` or `(None, identity)` where identity is the external id string, or a
    tuple `("user_alias", label, name)`, `("braze_id", id)`, `("email", e)`, `("phone", p)`.
    """
    n = ("external_id" in obj) + ("user_alias" in obj) + ("braze_id" in obj)
    if n > 1:
        return ERR_MULTIPLE_IDS, None
    if n == 1:
        if "external_id" in obj:
            ext = obj["external_id"]
            if type(ext) is not str or not ext:
                return ERR_EXTERNAL_ID, None
            # len() counts code points; only encode when the UTF-8 length could exceed the cap
            if len(ext) * 4 > MAX_EXTERNAL_ID_BYTES and len(ext.encode()) > MAX_EXTERNAL_ID_BYTES:
                return ERR_EXTERNAL_ID_TOO_LARGE, None
            return None, ext
        if "user_alias" in obj:
            alias = obj["user_alias"]
            if type(alias) is not dict:
                return ERR_USER_ALIAS, None
            name, label = alias.get("alias_name"), alias.get("alias_label")
            if type(name) is not str or not name or type(label) is not str or not label:
                return ERR_USER_ALIAS, None
            return None, ("user_alias", label, name)
        bid = obj["braze_id"]
        if type(bid) is not str or not bid:
            return ERR_BRAZE_ID, None
        return None, ("braze_id", bid)
    # Secondary identifiers: email wins over phone when both are present.
    email = obj.get("email")
    if email is not None:
        return (None, ("email", email)) if is_email(email) else (ERR_EMAIL, None)
    phone = obj.get("phone")
    if phone is not None:
        return (None, ("phone", phone)) if type(phone) is str and phone else (ERR_PHONE, None)
    return ERR_ID_REQUIRED, None


# Attributes -----------------------------------------------------------------------------------


def _std_email(v: Any) -> str | None:
    return None if v is None or is_email(v) else ERR_EMAIL


def _std_phone(v: Any) -> str | None:
    return None if v is None or _short_str(v) else ERR_PHONE


def _std_string(key: str):
    err = f"'{key}' is not valid"
    return lambda v: None if v is None or _short_str(v) else err


def _std_dob(v: Any) -> str | None:
    return None if v is None or _is_dob(v) else "'dob' is not valid"


def _std_gender(v: Any) -> str | None:
    return None if v is None or (type(v) is str and v in GENDERS) else "'gender' is not valid"


def _std_country(v: Any) -> str | None:
    # user attributes object: Braze maps a country it does not recognise as best it can, else
    # stores null; it does not refuse it (apply.py stores the code, or null). Not a string: assumed refused
    return None if v is None or type(v) is str else "'country' is not valid"


def _std_subscribe(code: str):
    return lambda v: None if type(v) is str and v in SUBSCRIPTION_STATES else code


def _std_groups(v: Any) -> str | None:
    if type(v) is not list:
        return "BAD_SUBSCRIPTION_GROUP_ARRAY"
    for g in v:
        if type(g) is not dict:
            return "BAD_SUBSCRIPTION_GROUP_HASH"
        gid = g.get("subscription_group_id")
        if type(gid) is not str or _UUID_RE.fullmatch(gid) is None:
            return "BAD_SUBSCRIPTION_GROUP_ID"
        if g.get("subscription_state") not in GROUP_STATES:
            return "BAD_SUBSCRIPTION_GROUP_STATE"
    return None


def _std_location(v: Any) -> str | None:
    if v is None:
        return None
    if type(v) is not dict:
        return "BAD_LOCATION_UPDATE"
    for k in ("longitude", "latitude"):
        n = v.get(k)
        if type(n) not in (int, float) or not math.isfinite(n):
            return "BAD_LOCATION_UPDATE"
    return None


def _std_bool(key: str):
    err = f"'{key}' is not valid"
    return lambda v: None if v is None or type(v) is bool else err


def _std_any(v: Any) -> str | None:  # fields Braze documents loosely; accepted as sent
    return None


#: standard profile fields (docs/braze.md#user-attributes-object) and their checks; anything else is a custom attribute
STANDARD_FIELDS: dict[str, Any] = {
    "email": _std_email,
    "phone": _std_phone,
    "dob": _std_dob,
    "gender": _std_gender,
    "country": _std_country,
    "email_subscribe": _std_subscribe("BAD_EMAIL_SUBSCRIPTION_STATE"),
    "push_subscribe": _std_subscribe("BAD_PUSH_SUBSCRIPTION_STATE"),
    "subscription_groups": _std_groups,
    "current_location": _std_location,
    "email_open_tracking_disabled": _std_bool("email_open_tracking_disabled"),
    "email_click_tracking_disabled": _std_bool("email_click_tracking_disabled"),
    "push_tokens": _std_any,
    # listed as profile fields (strings) by the user attributes object page
    "alias_name": _std_string("alias_name"),
    "alias_label": _std_string("alias_label"),
    "facebook": _std_any,
    "twitter": _std_any,
    **{
        k: _std_string(k)
        for k in (
            "first_name",
            "last_name",
            "home_city",
            "language",
            "time_zone",
            "date_of_first_session",
            "date_of_last_session",
            "marked_email_as_spam_at",
        )
    },
}


def _scalar_ok(v: Any) -> bool:
    t = type(v)
    if t is str:
        return len(v) <= MAX_STRING
    if t is int or t is bool:
        return True
    if t is float:
        return math.isfinite(v)
    return False


def _nested_key_ok(k: str) -> bool:
    # nested custom attributes page: no spaces, '.' or '$' in keys of nested custom attributes
    return 0 < len(k) <= MAX_STRING and "." not in k and "$" not in k and " " not in k


def _property_key_ok(k: str) -> bool:
    # event object page: property names are non-empty, at most 255 characters, no leading `$`.
    # The nested objects page quotes keys holding `.` or `[]` in filters, so they exist; the same
    # rule is assumed for keys inside nested property values (the docs give no other)
    return 0 < len(k) <= MAX_STRING and k[0] != "$"


def _nested_ok(v: Any, depth: int = 0, key_ok: Any = _nested_key_ok) -> bool:
    """A value inside a nested custom attribute (object or array of objects), or, with
    `key_ok=_property_key_ok`, inside an event or purchase property."""
    if depth > 50:
        return False
    t = type(v)
    if v is None or t is bool or t is int:
        return True
    if t is str:
        return len(v) <= MAX_STRING
    if t is float:
        return math.isfinite(v)
    if t is list:
        return all(_nested_ok(x, depth + 1, key_ok) for x in v)
    if t is dict:
        if len(v) == 1 and "$time" in v:  # dates inside objects must be {"$time": "<date>"}
            return is_time(v["$time"])
        return all(type(k) is str and key_ok(k) and _nested_ok(x, depth + 1, key_ok) for k, x in v.items())
    return False


def _small(v: Any) -> bool:
    return len(orjson.dumps(v)) <= MAX_NESTED_BYTES


def _object_list_ok(items: Any) -> bool:
    return type(items) is list and all(type(o) is dict and _nested_ok(o) for o in items) and _small(items)


def _identifier_list_ok(items: Any, with_new_object: bool) -> bool:
    if type(items) is not list:
        return False
    for it in items:
        if type(it) is not dict or type(it.get("$identifier_key")) is not str:
            return False
        if "$identifier_value" not in it or not _scalar_ok(it["$identifier_value"]):
            return False
        if with_new_object:
            new = it.get("$new_object")
            if type(new) is not dict or not _nested_ok(new) or not _small(new):
                return False
    return True


def custom_value_error(key: str, v: Any) -> str | None:
    """Check one custom attribute; returns an error `type` or None (docs/braze.md#user-attributes-object)."""
    if not key or len(key) > MAX_STRING or key[0] == "$":
        return f"custom attribute name is not valid: {key[:64]!r}"
    t = type(v)
    if v is None or t is bool or t is int:
        return None
    err = f"value of custom attribute {key[:64]!r} is not valid"
    if t is str:
        return None if len(v) <= MAX_STRING else err
    if t is float:
        return None if math.isfinite(v) else err
    if t is list:
        if all(_scalar_ok(x) for x in v):
            return None
        return None if _object_list_ok(v) else err
    if t is not dict:
        return err
    if not v:  # an empty nested object
        return None
    keys = v.keys()
    if keys == {"inc"}:
        n = v["inc"]
        return None if type(n) is int else err
    if keys <= {"add", "remove"}:
        ok = all(type(x) is list and all(_scalar_ok(y) for y in x) for x in v.values())
        return None if ok else err
    if keys <= {"$add", "$remove", "$update"}:
        ok = (
            ("$add" not in v or _object_list_ok(v["$add"]))
            and ("$remove" not in v or _identifier_list_ok(v["$remove"], False))
            and ("$update" not in v or _identifier_list_ok(v["$update"], True))
        )
        return None if ok else err
    # A plain nested object.
    return None if _nested_ok(v) and _small(v) else err


def attributes_error(obj: dict[str, Any]) -> str | None:
    """Check an attributes object's fields (identifier already checked)."""
    for k, v in obj.items():
        check = STANDARD_FIELDS.get(k)
        if check is not None:
            err = check(v)
            if err is not None:
                return err
            continue
        if k in ID_KEYS:
            continue
        if k in CONTROL_KEYS:
            if type(v) is not bool:
                return f"'{k}' is not valid"
            continue
        # inlined fast path for the usual custom attribute: a short key and a scalar value
        t = type(v)
        if k and len(k) <= MAX_STRING and k[0] != "$":
            if t is str:
                if len(v) <= MAX_STRING:
                    continue
            elif v is None or t is int or t is bool:
                continue
        err = custom_value_error(k, v)
        if err is not None:
            return err
    return None


# Events and purchases -------------------------------------------------------------------------


def properties_error(props: Any) -> str | None:
    """Event / purchase `properties` (docs/braze.md#event-object)."""
    if type(props) is not dict:
        return "'properties' is not valid"
    nested = False
    for k, v in props.items():
        if not k or len(k) > MAX_STRING or k[0] == "$" or k in RESERVED_PROPERTY_KEYS:
            return f"property name is not valid: {k[:64]!r}"
        t = type(v)
        if t is str:
            if len(v) > MAX_STRING:
                return f"value of property {k[:64]!r} is not valid"
        elif t is float:
            if not math.isfinite(v):
                return f"value of property {k[:64]!r} is not valid"
        elif t is list or t is dict:
            nested = True
            if not _nested_ok(v, 0, _property_key_ok):
                return f"value of property {k[:64]!r} is not valid"
        elif not (t is int or t is bool):
            # null included: Braze documents numbers, booleans, datetimes, strings, arrays and
            # objects; what it does with null is not said, so the emulator refuses it
            return f"value of property {k[:64]!r} is not valid"
    # The 100 KB cap applies to the whole properties object once anything in it is nested.
    if nested and not _small(props):
        return "'properties' is too large"
    return None


def _common_error(obj: dict[str, Any]) -> str | None:
    if "_update_existing_only" in obj and type(obj["_update_existing_only"]) is not bool:
        return ERR_UPDATE_ONLY
    if "app_id" in obj and type(obj["app_id"]) is not str:
        return "'app_id' is not valid"
    if "time" not in obj:
        return "'time' is required"
    if not is_time(obj["time"]):
        return "'time' is not valid"
    if "properties" in obj:
        return properties_error(obj["properties"])
    return None


def event_error(obj: dict[str, Any]) -> str | None:
    """Check an event object's fields (identifier already checked)."""
    name = obj.get("name")
    if name is None:
        return "'name' is required"
    if type(name) is not str or not name or len(name) > MAX_STRING or name[0] == "$":
        return "'name' is not valid"
    if name.startswith("ecommerce."):  # eCommerce recommended events have a schema (emulator/ecommerce.py)
        err = ecommerce_error(name, obj.get("properties"))
        if err is not None:
            return err
    return _common_error(obj)


def purchase_error(obj: dict[str, Any]) -> str | None:
    """Check a purchase object's fields (identifier already checked)."""
    pid = obj.get("product_id")
    if pid is None:
        return "'product_id' is required"
    if type(pid) is not str or not pid or len(pid) > MAX_STRING:
        return "'product_id' is not valid"
    cur = obj.get("currency")
    if cur is None:
        return "'currency' is required"
    if type(cur) is not str or cur not in CURRENCIES:
        return "'currency' is not valid"
    if "price" not in obj:
        return "'price' is required"
    price = obj["price"]
    if not ((type(price) is int) or (type(price) is float and math.isfinite(price))):
        return "'price' is not valid"
    if "quantity" in obj:
        q = obj["quantity"]
        if type(q) is not int or not 1 <= q <= 100:
            return ERR_QUANTITY
    return _common_error(obj)


_CHECKS = {"attributes": attributes_error, "events": event_error, "purchases": purchase_error}


# Whole requests -------------------------------------------------------------------------------


@dataclass(slots=True)
class TrackPlan:
    """A validated `/users/track` body: what to apply and what to report."""

    #: array name -> [(identity, object)] of valid objects, in request order
    valid: dict[str, list[tuple[Any, dict[str, Any]]]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def any_valid(self) -> bool:
        """Whether at least one object passed validation."""
        return any(self.valid.values())


@dataclass(slots=True)
class Fatal:
    """A whole-request rejection: answer `status` with `body`, apply nothing."""

    status: int
    body: dict[str, Any]


def check_track(body: Any, *, max_objects: int, batch_mode: str) -> TrackPlan | Fatal:
    """Validate a parsed `/users/track` body against Braze's rules (docs/braze.md#request-and-response-format)."""
    if type(body) is not dict:
        return Fatal(400, {"message": MSG_BAD_REQUEST})
    arrays: list[tuple[str, list]] = []
    for name in ARRAYS:
        if name in body:
            items = body[name]
            if type(items) is not list:
                return Fatal(400, {"message": MSG_BAD_REQUEST})
            arrays.append((name, items))
    if batch_mode == "combined":
        too_many = sum(len(items) for _, items in arrays) > max_objects
    else:
        too_many = any(len(items) > max_objects for _, items in arrays)
    if too_many:
        return Fatal(400, {"message": MSG_TOO_MANY})

    plan = TrackPlan()
    for name, items in arrays:
        check = _CHECKS[name]
        valid: list[tuple[Any, dict[str, Any]]] = []
        for i, obj in enumerate(items):
            if type(obj) is not dict:
                err, ident = ERR_NOT_OBJECT, None
            else:
                err, ident = identify(obj)
                if err is None:
                    err = check(obj)
            if err is None:
                valid.append((ident, obj))
            else:
                plan.errors.append({"type": err, "input_array": name, "index": i})
        plan.valid[name] = valid
    return plan


#: `/users/delete` identifier fields and the check of one entry (docs/braze.md#deleting-users)
_PRIORITIZATIONS = frozenset({"identified", "unidentified", "most_recently_updated"})


def _delete_entry_ok(kind: str, v: Any) -> bool:
    if kind in ("external_ids", "braze_ids"):
        return type(v) is str and bool(v)
    if kind == "user_aliases":
        return (
            type(v) is dict
            and type(v.get("alias_name")) is str
            and bool(v["alias_name"])
            and type(v.get("alias_label")) is str
            and bool(v["alias_label"])
        )
    field_name = "email" if kind == "email_addresses" else "phone"
    if type(v) is not dict:
        return False
    ident = v.get(field_name)
    if not (is_email(ident) if field_name == "email" else (type(ident) is str and bool(ident))):
        return False
    prio = v.get("prioritization")
    if type(prio) is not list or not prio or not all(p in _PRIORITIZATIONS for p in prio):
        return False
    return not ("identified" in prio and "unidentified" in prio)


DELETE_KINDS = ("external_ids", "user_aliases", "braze_ids", "email_addresses", "phone_numbers")


def check_delete(body: Any, *, max_ids: int) -> tuple[str, list[Any]] | Fatal:
    """Validate a parsed `/users/delete` body; returns `(kind, ids)` or a Fatal 400."""
    if type(body) is not dict:
        return Fatal(400, {"message": MSG_BAD_REQUEST})
    kinds = [k for k in DELETE_KINDS if body.get(k) is not None]
    if not kinds:
        return Fatal(400, {"message": "one of " + ", ".join(DELETE_KINDS) + " is required"})
    if len(kinds) > 1:
        return Fatal(400, {"message": "only one identifier type may be provided per request"})
    kind = kinds[0]
    ids = body[kind]
    if type(ids) is not list or not ids:
        return Fatal(400, {"message": f"'{kind}' must be a non-empty array"})
    if len(ids) > max_ids:
        return Fatal(400, {"message": f"The max number of {kind} ids per request was exceeded"})
    for v in ids:
        if not _delete_entry_ok(kind, v):
            return Fatal(400, {"message": f"'{kind}' contains an invalid entry"})
    return kind, ids
