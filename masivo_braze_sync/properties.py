"""Make arbitrary JSON properties valid for Braze event and purchase objects (CONTRACT §6, §7).

Nested objects and arrays are flattened to `parent_child` keys (arrays by index:
`{"items": [{"sku": "a"}]}` → `items_0_sku`), so every value sent is a scalar. Keys are made
valid: leading `$` removed (Braze refuses them), reserved keys `time` and `event_name` renamed
to `masivo_time` / `masivo_event_name`. What cannot be made valid without changing its meaning
rejects the row with a reason: a key over 255 characters, a string value over 255 characters,
two keys that become the same after flattening, more than 256 properties, a non-finite number.
Reasons name the property key (schema, not customer data), never a value.
"""

from __future__ import annotations

import math
from typing import Any

from masivo_braze_sync.errors import RecordRejected

MAX_KEY = 255
MAX_STRING = 255
MAX_PROPERTIES = 256
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


def flatten_properties(properties: dict[str, Any] | None) -> dict[str, Any]:
    """Flatten and clean one row's properties; raises RecordRejected when it cannot."""
    if not properties:
        return {}
    out: dict[str, Any] = {}
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
        key = clean_key(path)
        if key in out:
            raise RecordRejected(f"properties collide after flattening on key '{key}'")
        out[key] = _scalar(key, value)
        if len(out) > MAX_PROPERTIES:
            raise RecordRejected(f"more than {MAX_PROPERTIES} properties after flattening")
    return out


def flatten_fields(obj: dict[str, Any] | None, *, prefix: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """Flatten a JSON object into custom attributes where a problem drops only that field.

    Same key and value rules as `flatten_properties`, but lenient: returns the fields that are
    valid (`prefix` + flattened key) and, per field dropped, the reason (reasons name keys only).
    """
    fields: dict[str, Any] = {}
    problems: dict[str, str] = {}
    if not obj:
        return fields, problems
    stack: list[tuple[str, Any, int]] = [(str(k), v, 0) for k, v in reversed(list(obj.items()))]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            problems[prefix + path] = f"'{path[:60]}' is nested deeper than {MAX_DEPTH} levels"
            continue
        if isinstance(value, dict):
            stack.extend((f"{path}_{k}", v, depth + 1) for k, v in reversed(list(value.items())))
            continue
        if isinstance(value, list):
            stack.extend((f"{path}_{i}", v, depth + 1) for i, v in reversed(list(enumerate(value))))
            continue
        key = prefix + path
        try:
            key = prefix + clean_key(path)
            if len(key) > MAX_KEY:
                raise RecordRejected(f"attribute key '{key[:60]}...' is longer than {MAX_KEY} characters")
            if key in fields:
                raise RecordRejected(f"'{key}' collides with another key after flattening")
            fields[key] = _scalar(key, value)
        except RecordRejected as exc:
            problems[key] = exc.reason
    return fields, problems
