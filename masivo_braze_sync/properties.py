"""Make arbitrary JSON valid for Braze: event and purchase properties, custom attributes.

Properties (docs/braze.md#event-object): nested objects and arrays are flattened to `parent_child`
keys (arrays by index: `{"items": [{"sku": "a"}]}` → `items_0_sku`), so every value sent is a
scalar. Keys are made valid: leading `$` removed (Braze refuses them), reserved keys `time` and
`event_name` renamed to `masivo_time` / `masivo_event_name`. A null value is not sent: Braze
documents numbers, booleans, datetimes, strings, arrays and objects as property values, not null.
What cannot be made valid without changing its meaning rejects the row with a reason: a key over
255 characters, a string value over 255 characters, two keys that become the same after
flattening, a non-finite number, nesting deeper than 32 levels. More than 256 properties:
`flatten_properties` rejects the row, `flatten_truncated` keeps 256 of them (the shallowest
first, then in order; docs/braze.md#limits). Reasons name the property key (schema, not
customer data), never a value.

Custom attributes (`flatten_fields`, docs/braze.md#user-attributes-object): objects flatten the
same way, but an array of scalars stays an array attribute (unique values, nulls left out, at
most Braze's array length: the first values are kept and the cut is noted), and a problem drops
only that field.
"""

from __future__ import annotations

import math
from typing import Any

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.errors import RecordRejected

MAX_KEY = BRAZE.string_chars
MAX_STRING = BRAZE.string_chars
MAX_PROPERTIES = BRAZE.event_properties
MAX_DEPTH = 32
RESERVED_KEYS = {"time": "masivo_time", "event_name": "masivo_event_name"}


def clean_key(key: str) -> str:
    """A property key Braze accepts, or RecordRejected."""
    cleaned = key.lstrip("$")
    cleaned = RESERVED_KEYS.get(cleaned, cleaned)
    if not cleaned:
        raise RecordRejected("a property key is empty (or only '$')")
    if len(cleaned) > MAX_KEY:
        raise RecordRejected(f"a property key is longer than {MAX_KEY} characters")
    return cleaned


def _scalar(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise RecordRejected(f"property '{key}' is longer than {MAX_STRING} characters")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordRejected(f"property '{key}' is not a finite number")
    return value  # int, float, bool, None


def _leaves(properties: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """(Braze key, value, depth) of every non-null leaf, in document order; RecordRejected on a rule."""
    out: list[tuple[str, Any, int]] = []
    seen: set[str] = set()
    # iterative walk: deeply nested input must not hit Python's recursion limit
    stack: list[tuple[str, Any, int]] = [(str(k), v, 0) for k, v in reversed(list(properties.items()))]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RecordRejected(f"properties are nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((f"{path}_{k}", v, depth + 1) for k, v in reversed(list(value.items())))
            continue
        if isinstance(value, list):
            stack.extend((f"{path}_{i}", v, depth + 1) for i, v in reversed(list(enumerate(value))))
            continue
        if value is None:
            continue  # not a documented property value: docs/braze.md#event-object
        key = clean_key(path)
        if key in seen:
            raise RecordRejected(f"properties collide after flattening on key '{key}'")
        seen.add(key)
        out.append((key, _scalar(key, value), depth))
    return out


def flatten_properties(properties: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten and clean one row's properties; raises RecordRejected when it cannot, or when
    more than 256 properties result."""
    if not properties:
        return {}
    leaves = _leaves(properties)
    if len(leaves) > MAX_PROPERTIES:
        raise RecordRejected(f"more than {MAX_PROPERTIES} properties after flattening")
    return {key: value for key, value, _ in leaves}


def flatten_truncated(properties: dict[str, Any] | None, limit: int = MAX_PROPERTIES) -> tuple[dict[str, Any], int]:
    """Flatten like `flatten_properties`, but keep at most `limit` properties instead of rejecting.

    Braze keeps the first 256 properties of an event and ignores the rest (docs/braze.md#limits);
    sending exactly what it keeps makes the choice ours and deterministic: the shallowest values
    first (top-level values describe the event; a long list loses its tail), ties in document
    order. The kept properties stay in document order. Returns them and the count before the cut.
    """
    if not properties:
        return {}, 0
    leaves = _leaves(properties)
    if len(leaves) <= limit:
        return {key: value for key, value, _ in leaves}, len(leaves)
    keep = set(sorted(range(len(leaves)), key=lambda i: (leaves[i][2], i))[:limit])
    return {key: value for i, (key, value, _) in enumerate(leaves) if i in keep}, len(leaves)


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and not any(isinstance(x, dict | list) for x in value)


def _array(key: str, values: list[Any]) -> tuple[list[Any], int]:
    """An array attribute's values as Braze stores them (unique, in order, no nulls), cut to
    Braze's array length; and how many unique values there were. RecordRejected on a bad value."""
    kept: list[Any] = []
    seen: set[tuple[type, Any]] = set()
    for value in values:
        if value is None:
            continue
        value = _scalar(key, value)
        marker = (type(value), value)  # `1` and `true` are different values (in Python, 1 == True)
        if marker not in seen:
            seen.add(marker)
            kept.append(value)
    return kept[: BRAZE.array_values], len(kept)


def flatten_fields(
    obj: dict[str, Any] | None, *, prefix: str = ""
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Flatten a JSON object into custom attributes where a problem drops only that field.

    Same key and value rules as `flatten_properties`, but lenient, and an array of scalars stays
    an array attribute. Returns the fields that are valid (`prefix` + flattened key), per field
    dropped the reason, and per array attribute cut to Braze's length a note (reasons and notes
    name keys only).
    """
    fields: dict[str, Any] = {}
    problems: dict[str, str] = {}
    notes: dict[str, str] = {}
    if not obj:
        return fields, problems, notes
    stack: list[tuple[str, Any, int]] = [(str(k), v, 0) for k, v in reversed(list(obj.items()))]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            problems[prefix + path] = f"'{path[:60]}' is nested deeper than {MAX_DEPTH} levels"
            continue
        if isinstance(value, dict):
            stack.extend((f"{path}_{k}", v, depth + 1) for k, v in reversed(list(value.items())))
            continue
        if isinstance(value, list) and not _is_scalar_list(value):
            stack.extend((f"{path}_{i}", v, depth + 1) for i, v in reversed(list(enumerate(value))))
            continue
        key = prefix + path
        try:
            key = prefix + clean_key(path)
            if len(key) > MAX_KEY:
                raise RecordRejected(f"attribute key '{key[:60]}...' is longer than {MAX_KEY} characters")
            if key in fields:
                raise RecordRejected(f"'{key}' collides with another key after flattening")
            if isinstance(value, list):
                values, n = _array(key, value)
                if n > len(values):
                    notes[key] = f"{n} values, Braze keeps {len(values)}"
                fields[key] = values
            else:
                fields[key] = _scalar(key, value)
        except RecordRejected as exc:
            problems[key] = exc.reason
    return fields, problems, notes
