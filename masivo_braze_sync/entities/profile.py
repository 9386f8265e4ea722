"""A customer row's Braze fields, computed column by column (the rules: entities/customers.py).

The customers mapping used to build each profile field by field, row by row. Most columns repeat
their values from row to row (a country, a language, a tier, null) and the JSON columns repeat
their whole text (customers of one segment share attributes), so each rule here runs once per
distinct value of its column within a batch: the outcome (the value sent, its hash, or why the
field is dropped) is looked up for the other rows. The outcome of a value never depends on
another column, except the phone's on the country (the pair is the key then).

A JSON column's outcome is a `Segment`: the fields it puts, in order, with their hashes, and the
drop and note operations in the order the rules perform them. Applied in column order (standard
fields, attributes, tags) they give exactly the profile's fields, drops and notes: no field name
of one segment can be written by another (standard fields are prefixed in custom attributes,
`masivo_*` keys too, tags are all `masivo_tag_*`), and the drop operations are replayed as
dict writes, so a later drop of the same key keeps the earlier one's position, as before.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import orjson

from masivo_braze_sync.entities import phones
from masivo_braze_sync.iso import COUNTRIES, LANGUAGES
from masivo_braze_sync.properties import MAX_STRING, flatten_fields

GENDERS = {"MALE": "M", "FEMALE": "F", "OTHER": "O", "M": "M", "F": "F", "O": "O", "N": "N", "P": "P"}
STANDARD_FIELDS = frozenset(
    {
        "external_id", "user_alias", "braze_id", "email", "phone", "first_name", "last_name", "home_city",
        "dob", "gender", "country", "language", "time_zone", "email_subscribe", "push_subscribe",
        "subscription_groups", "current_location", "push_tokens", "date_of_first_session",
        "date_of_last_session", "marked_email_as_spam_at", "facebook", "twitter", "bio",
        "email_open_tracking_disabled", "email_click_tracking_disabled",
    }
)  # fmt: skip
#: keys of the attributes object Braze reads as an instruction or an identifier, not as a custom
#: attribute (docs/braze.md#user-attributes-object); `image_url` is an older profile field
CONTROL_KEYS = frozenset(
    {"_update_existing_only", "_merge_objects", "push_token_import", "alias_name", "alias_label", "image_url"}
)
CUSTOM_PREFIX = "attr_"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
LANGUAGE_SPLIT = re.compile(r"[-_]")
TAG_PREFIX = "masivo_tag_"
MIN_DOB_YEAR = 1900

#: one field's outcome: (value, None, None) when it is sent, (None, None, reason) when dropped;
#: `members` adds the hash and the field's JSON members
Outcome = tuple[Any, ...]


def _hash(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=8).hexdigest()


#: scalar values repeat from profile to profile (a country, a tier, a flag, null): their hashes are
#: computed once; keyed by type too, since `True`, `1` and `1.0` hash differently
_HASHES: dict[tuple[type, Any], str] = {}
_MAX_HASHES = 50_000  # then it starts over: memory stays bounded whatever values arrive
_SCALARS = (str, int, float, bool, type(None))


def value_hash(value: Any) -> str:
    """A short, stable hash of a field's value (null included)."""
    kind = type(value)
    if kind not in _SCALARS:
        return _hash(value)
    key = (kind, value)
    found = _HASHES.get(key)
    if found is None:
        if len(_HASHES) >= _MAX_HASHES:
            _HASHES.clear()
        found = _HASHES[key] = _hash(value)
    return found


def _sent(value: Any) -> Outcome:
    # hashed by `with_members`, with the JSON it writes anyway (not `value_hash`: that hashes each
    # distinct value once per batch already, and caching every email process-wide would churn)
    return value, None, None


def _dropped(name: str, why: str) -> Outcome:
    return None, None, f"field {name} dropped: {why}"


def _text(name: str, value: str | None) -> Outcome:
    if value is not None and len(value) > MAX_STRING:
        return _dropped(name, f"longer than {MAX_STRING} characters")
    return _sent(value)


def email(raw: str | None) -> Outcome:
    """Trimmed; not an address (or too long) ⇒ dropped."""
    value = raw.strip() if raw is not None else None
    if value is not None and (len(value) > MAX_STRING or not EMAIL.match(value)):
        return _dropped("email", "not a valid email address")
    return _sent(value)


def country(raw: str | None) -> Outcome:
    """ISO 3166-1 alpha-2, case-insensitive; anything else ⇒ dropped."""
    value = raw.strip().upper() if raw is not None else None
    if value is not None and value not in COUNTRIES:
        return _dropped("country", "not an ISO 3166-1 alpha-2 code")
    return _sent(value)


def phone(pair: tuple[str | None, str | None]) -> Outcome:
    """(phone, the country sent or None): E.164 when it can be normalised, else as written."""
    raw, region = pair
    return _text("phone", phones.e164(raw, region) if raw is not None else None)


def language(raw: str | None) -> Outcome:
    """Reduced to its ISO 639-1 code (`es-CO` → `es`); unknown ⇒ dropped."""
    if raw is None:
        return _sent(None)
    code = LANGUAGE_SPLIT.split(raw.strip(), maxsplit=1)[0].lower()
    if code in LANGUAGES:
        return _sent(code)
    return _dropped("language", "not an ISO 639-1 language code")


def gender(raw: str | None) -> Outcome:
    """MALE→M, FEMALE→F, OTHER→O (M/F/O/N/P kept), null stays null, else dropped."""
    if raw is None:
        return _sent(None)
    code = GENDERS.get(raw.strip().upper())
    return _sent(code) if code is not None else _dropped("gender", "not MALE, FEMALE or OTHER")


def dob(raw: str | None, today: date) -> Outcome:
    """`YYYY-MM-DD`; in the future or before 1900 ⇒ dropped."""
    if raw is not None:
        day = date.fromisoformat(raw)
        if day > today:
            return _dropped("dob", "in the future")
        if day.year < MIN_DOB_YEAR:
            return _dropped("dob", f"before {MIN_DOB_YEAR}")
    return _sent(raw)


def number(raw: str | None) -> int | float | None:
    """A numeric column as JSON's number; ValueError when JSON cannot carry it (NaN, infinities,
    beyond a double's range)."""
    if raw is None:
        return None
    value = Decimal(raw)
    if not value.is_finite():
        raise ValueError("not a finite number")
    if value == value.to_integral_value() and abs(value) < 2**63:
        return int(value)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError("beyond a double's range")
    return as_float


def points(raw: str | None) -> Outcome:
    """`masivo_points`: a number JSON can carry, else dropped."""
    try:
        return _sent(number(raw))
    except ValueError as exc:
        return _dropped("masivo_points", str(exc))


def text(name: str) -> Callable[[str | None], Outcome]:
    """A text field: over 255 characters ⇒ dropped."""
    return lambda raw: _text(name, raw)


#: the standard fields in the order a profile lists them: (Braze name, rule, column(s) read);
#: `phone` reads the phone and the country the `country` rule keeps, and comes after it
STANDARD: tuple[tuple[str, str], ...] = (
    ("email", "email"),
    ("country", "country"),
    ("phone", "phone"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("home_city", "city"),
    ("language", "language"),
    ("gender", "gender"),
    ("dob", "dob"),
    ("masivo_status", "status"),
    ("masivo_tier", "tier"),
    ("masivo_points", "points"),
)


def with_members(name: str, rule: Callable[[Any], Outcome], values: list[Hashable]) -> list[Outcome]:
    """`rule` applied to each distinct value once (its outcome repeated for the others), completed
    with the value's hash and the field's JSON members as orjson writes them in an object, each
    with a leading comma: `,"name":value` (None when the value is null or dropped: a new profile
    does not send it) and `,"name":"hash"` (None when dropped). A new profile's body and state are
    these members joined."""
    key = b"," + orjson.dumps(name) + b":"
    dumps, blake2b = orjson.dumps, hashlib.blake2b
    outcomes: dict[Hashable, Outcome] = {}
    for raw in dict.fromkeys(values):
        value, _, why = rule(raw)
        if why is not None:
            outcomes[raw] = (None, None, why, None, None)
            continue
        written = dumps(value)
        hashed = blake2b(written, digest_size=8).hexdigest()  # `_hash`, from the same bytes
        outcomes[raw] = (value, hashed, None, None if value is None else key + written, key + dumps(hashed))
    return list(map(outcomes.__getitem__, values))


def standard_columns(columns: dict[str, list[Any]], today: date) -> list[list[Outcome]]:
    """Per standard field (STANDARD's order), the outcome of every row, with its members."""
    rules: dict[str, Callable[[Any], Outcome]] = {
        "email": email,
        "country": country,
        "language": language,
        "gender": gender,
        "dob": lambda raw: dob(raw, today),
        "points": points,
    }
    countries = with_members("country", country, columns["country"])
    out = []
    for name, column in STANDARD:
        if name == "country":
            out.append(countries)
        elif name == "phone":
            pairs = [(p, c[0]) for p, c in zip(columns["phone"], countries, strict=True)]
            out.append(with_members("phone", phone, pairs))
        else:
            out.append(with_members(name, rules.get(column) or text(name), columns[column]))
    return out


# -- the JSON columns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """What one JSON column's text contributes to a profile."""

    #: fields put, in order, and their hashes (same keys)
    values: dict[str, Any]
    hashes: dict[str, str]
    #: (key, reason) writes to the profile's drops, in the order the rules make them
    drops: tuple[tuple[str, str], ...]
    #: (field, note) for fields sent but not as written
    notes: tuple[tuple[str, str], ...]
    #: how many of `values` are not null
    present: int
    #: `values`' JSON members (`members`): the not null ones as a new profile sends them; the hashes
    body: bytes
    state: bytes


def _json(raw: str | None) -> Any:
    """A jsonb column's value; ValueError when orjson cannot read it (1e400, 1,000+ levels)."""
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ValueError("holds a number out of range or nests over 1,000 levels") from None


def _json_object(name: str, raw: str | None, drops: list[tuple[str, str]]) -> dict[str, Any]:
    """A jsonb column that must hold an object; `{}` (and the column dropped) when it does not."""
    try:
        value = _json(raw)
    except ValueError as exc:
        drops.append((name, f"field {name} dropped: {exc}"))
        return {}
    if not isinstance(value, dict):
        drops.append((name, f"field {name} dropped: not a JSON object"))
        return {}
    return value


def custom_name(key: str) -> str:
    """The attribute name of a custom key: prefixed when Braze would read it as something else."""
    # a custom key must not shadow a standard field, a key Braze reads as an instruction (its
    # control keys start with `_`: any such key is assumed reserved), or our own masivo_ attributes
    reserved = key in STANDARD_FIELDS or key in CONTROL_KEYS or key.startswith(("_", "masivo_"))
    return CUSTOM_PREFIX + key if reserved else key


def _segment(values: dict[str, Any], drops: list[tuple[str, str]], notes: list[tuple[str, str]]) -> Segment:
    hashes = {name: value_hash(value) for name, value in values.items()}
    sent = {name: value for name, value in values.items() if value is not None}
    return Segment(
        values,
        hashes,
        tuple(drops),
        tuple(notes),
        len(sent),
        b"," + orjson.dumps(sent)[1:-1] if sent else b"",
        b"," + orjson.dumps(hashes)[1:-1] if hashes else b"",
    )


def attributes(raw: str | None) -> Segment:
    """The `attributes` column: one custom attribute per key, objects flattened."""
    drops: list[tuple[str, str]] = []
    flat, problems, notes = flatten_fields(_json_object("attributes", raw, drops))
    drops.extend((custom_name(key), f"custom attribute dropped: {problem}") for key, problem in problems.items())
    values: dict[str, Any] = {}
    for key, value in flat.items():
        name = custom_name(key)
        if name in values:  # `email` and `attr_email` both want `attr_email`: the first keeps it
            drops.append((key, f"custom attribute dropped: '{key[:60]}' collides with '{name[:60]}'"))
        else:
            values[name] = value
    # two keys can name one attribute (`email`, `attr_email`): the later note replaces the earlier
    named = {custom_name(k): f"field {custom_name(k)} truncated: {note}" for k, note in notes.items()}
    return _segment(values, drops, list(named.items()))


def tags(raw: str | None) -> Segment:
    """The `tags` column: masivo_tag_<key>, a string, number or boolean."""
    drops: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key, value in _json_object("tags", raw, drops).items():
        name = TAG_PREFIX + str(key)
        if len(name) > MAX_STRING:
            drops.append((name[:60] + "...", f"field {name[:60]}... dropped: key longer than {MAX_STRING} characters"))
        elif isinstance(value, dict | list):
            drops.append((name, f"field {name} dropped: not a string, number or boolean"))
        elif isinstance(value, str) and len(value) > MAX_STRING:
            drops.append((name, f"field {name} dropped: longer than {MAX_STRING} characters"))
        else:
            values[name] = value
    return _segment(values, drops, [])


def segments(parse: Callable[[str | None], Segment], texts: list[str | None]) -> list[Segment]:
    """`parse` (`attributes` or `tags`) of each distinct text once, repeated for the rows that share it."""
    found = {text: parse(text) for text in dict.fromkeys(texts)}
    return list(map(found.__getitem__, texts))
