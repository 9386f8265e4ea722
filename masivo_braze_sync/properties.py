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

Events go through `flatten_event_properties`: a fast path that builds what `flatten_truncated`
builds and hands anything doubtful to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
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


def _nodes(obj: dict[str, Any], *, scalar_arrays: bool = False) -> Iterator[tuple[str, Any, int]]:
    """(path, value, depth) of every leaf of `obj` in document order, paths joined by `_` (lists by
    index). A container at MAX_DEPTH is not opened: it comes out whole, for the caller to refuse;
    with `scalar_arrays`, a list of scalars is a leaf (an array attribute)."""
    # iterative walk: deeply nested input must not hit Python's recursion limit
    stack: list[tuple[str, Any, int]] = _children("", obj.items(), 0)
    while stack:
        path, value, depth = stack.pop()
        if depth >= MAX_DEPTH or not isinstance(value, dict | list):
            yield path, value, depth
        elif isinstance(value, dict):
            stack.extend(_children(path + "_", value.items(), depth + 1))
        elif scalar_arrays and _is_scalar_list(value):
            yield path, value, depth
        else:
            stack.extend(_children(path + "_", enumerate(value), depth + 1))


def _children(prefix: str, items: Iterable[tuple[Any, Any]], depth: int) -> list[tuple[str, Any, int]]:
    """Stack entries for `items`, last first, so that popping them goes in document order."""
    return [(f"{prefix}{k}", v, depth) for k, v in reversed(list(items))]


def _leaves(properties: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """(Braze key, value, depth) of every non-null leaf, in document order; RecordRejected on a rule."""
    out: list[tuple[str, Any, int]] = []
    seen: set[str] = set()
    for path, value, depth in _nodes(properties):
        if isinstance(value, dict | list):  # at MAX_DEPTH: anything inside is nested deeper
            if value:
                raise RecordRejected(f"properties are nested deeper than {MAX_DEPTH} levels")
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
    for path, value, depth in _nodes(obj, scalar_arrays=True):
        if isinstance(value, dict | list) and depth >= MAX_DEPTH:
            problems[prefix + path] = f"'{path[:60]}' is nested deeper than {MAX_DEPTH} levels"
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


# --- the fast path for event properties -------------------------------------------------------
# The same rules as `flatten_truncated`, kept apart for speed (benchmarks/RESULTS.md): the trie is
# process-wide on purpose, since key paths repeat across rows, runs and threads; its size is bounded.

_INDEX = [str(i) for i in range(MAX_PROPERTIES + 1)]  # list positions as keys, built once
#: What earlier rows taught about key paths: key -> (the cleaned Braze key, or None when no valid
#: key can come from this path; the children's trie; the children's path prefix). Keys repeat from
#: event to event, so the paths are built, `$`-stripped, renamed and length-checked once, not per row.
_Trie = dict[str, tuple[str | None, dict, str]]
_MAX_TRIE_ENTRIES = 100_000  # then it starts over: memory stays bounded whatever keys arrive
_trie: _Trie = {}
_trie_entries = 0


def _learn(node: _Trie, prefix: str, k: str) -> tuple[str | None, dict, str]:
    global _trie_entries
    path = prefix + k  # TypeError for a key that is not a string: the caller falls back
    try:
        key: str | None = clean_key(path)
    except RecordRejected:
        key = None
    entry = (key, {}, path + "_")
    node[k] = entry  # a race between threads only builds the same entry twice
    _trie_entries += 1
    return entry


def _walk(items: Any, node: _Trie, prefix: str, depth: int, out: dict[str, Any]) -> bool:
    """Flatten `items` ((key, value) pairs at `depth`) into `out`; False when a rule may reject."""
    if depth > MAX_DEPTH:
        return False
    for k, value in items:
        entry = node.get(k) or _learn(node, prefix, k)
        kind = type(value)
        if kind is str:
            if len(value) > MAX_STRING:
                return False
        elif kind is int or kind is bool:
            pass
        elif value is None:
            continue  # not sent (see above): nor counted, nor checked for collisions
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif kind is dict:
            if value and not _walk(value.items(), entry[1], entry[2], depth + 1, out):
                return False
            continue
        elif kind is list:
            if value and not _walk(_indexed(value), entry[1], entry[2], depth + 1, out):
                return False
            continue
        else:  # a type orjson never produces (subclasses included)
            return False
        key = entry[0]
        if key is None or key in out:
            return False
        out[key] = value
        if len(out) > MAX_PROPERTIES:
            return False
    return True


def _indexed(values: list) -> Any:
    n = len(values)
    return zip(_INDEX if n <= MAX_PROPERTIES else map(str, range(n)), values, strict=False)  # _INDEX is longer


def flatten_event_properties(properties: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`flatten_truncated`, with a fast path for what orjson parses from Postgres.

    Returns the properties to send and how many there were before the cut to 256.
    The general flattening was ~70% of the transform (profiled: a tuple, an f-string and a key
    clean-up per node). This is one recursive pass over exact JSON types that looks key paths up
    in `_trie` instead of rebuilding them. It builds the same dict in the same order; at the first
    value, key or count that a rule might refuse or cut (or an unexpected type) it gives up and
    `flatten_truncated` runs instead, so rejections, cuts and reasons come from there unchanged.
    """
    global _trie, _trie_entries
    if _trie_entries > _MAX_TRIE_ENTRIES:
        _trie, _trie_entries = {}, 0
    out: dict[str, Any] = {}
    try:
        if _walk(properties.items(), _trie, "", 0, out):
            return out, len(out)
    except TypeError:
        pass
    return flatten_truncated(properties, MAX_PROPERTIES)
