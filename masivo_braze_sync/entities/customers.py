"""Masivo customers → Braze user profiles (`/users/track` attributes, `/users/delete`).

`external_id` = the customer id. Field mapping (docs/braze.md#user-attributes-object):

- email → email: trimmed; not an address ⇒ field dropped.
- phone → phone: E.164 when it can be normalised (the country as default region), else as written.
- first_name, last_name, city → first_name, last_name, home_city: over 255 characters ⇒ dropped.
- language → language: reduced to its ISO 639-1 code (`es-CO` → `es`); unknown ⇒ dropped.
- gender → gender: MALE→M, FEMALE→F, OTHER→O (M/F/O/N/P kept), null stays null, else dropped.
- dob → dob: `YYYY-MM-DD`; in the future or before 1900 ⇒ dropped.
- country → country: ISO 3166-1 alpha-2 (case-insensitive); anything else ⇒ dropped.
- status, tier, points → custom attributes masivo_status, masivo_tier, masivo_points.
- attributes (jsonb) → one custom attribute per key, objects flattened `parent_child`; an array
  of scalars stays an array attribute (unique values, nulls left out, Braze's first 25 kept and
  the cut noted). A key Braze would read as something else gets the prefix `attr_`: a standard
  field, a control key or identifier (`_update_existing_only`, `alias_name`, ..., and any key
  starting with `_`), or a key starting with `masivo_` (ours).
- tags (jsonb), with the Customer tags toggle → masivo_tag_<key>: string, number or boolean
  (other values dropped); a removed key is sent as null.

Key namespaces (one owner each, README "Braze keys"): the standard fields; `masivo_status`,
`masivo_tier`, `masivo_points` and `masivo_tag_*` (here; an audience whose `masivo_<name>` would
land on one of them is refused by the audiences entity, `CUSTOMER_KEYS`); `attr_*` and the
customer's own attribute keys (here); every other `masivo_*` (audiences).

Only changed fields are sent: `braze_sync.customer_state` keeps, per customer, a short hash of
each field last delivered. A touched row whose values did not change sends nothing; a field that
became null (or a removed attribute or tag key) is sent as null. A dropped field is not sent and
keeps its previous hash, so it goes out once it is fixed. Each drop is recorded in
`rejected_rows` with stage `field`; the rest of the profile goes.

Toggles: create (customer never sent), update (already sent), delete (soft `deleted_at` or hard
delete ⇒ `/users/delete`, 50 ids per request). With create off, every object is update-only
(`_update_existing_only: true`), so a profile deleted in Braze by hand is not re-created either.
A customer deleted before it was ever sent is not sent at all. Other entities skip deleted
customers on their own (they read `deleted_at`), so nothing re-creates a deleted profile.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import phonenumbers
import polars as pl
import psycopg

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.entities.base import (
    IN_LOG_RANGE,
    OBJECT_SCHEMA,
    REJECT_SCHEMA,
    AccountContext,
    Entity,
    Prepared,
    customer_id_rules,
    first_rule,
    judge,
    update_only,
)
from masivo_braze_sync.iso import COUNTRIES, LANGUAGES
from masivo_braze_sync.properties import MAX_STRING, flatten_fields

#: the toggles of this entity (`braze_integrations` columns)
CREATE, UPDATE, DELETE = "sync_customers_create", "sync_customers_update", "sync_customers_delete"
TAGS = "sync_customer_tags"
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
TAG_PREFIX = "masivo_tag_"
#: the custom attributes this entity owns under `masivo_`: no audience may write them
CUSTOMER_KEYS = frozenset({"masivo_status", "masivo_tier", "masivo_points"})
MIN_DOB_YEAR = 1900

EXTRACT_SQL = f"""
WITH changed AS (
    SELECT entity_key, min(id) AS first_id
    FROM braze_sync.change_log
    WHERE entity = 'customers' AND {IN_LOG_RANGE}
    GROUP BY entity_key
)
SELECT ch.entity_key AS key,
       c.id IS NOT NULL AND c.deleted_at IS NULL AS active,
       c.email, c.phone, c.first_name, c.last_name, c.gender, c.dob::text AS dob, c.country,
       c.language, c.city, c.status, c.tier, c.points::text AS points,
       c.tags::text AS tags, c.attributes::text AS attributes,
       s.customer_id IS NOT NULL AND s.deleted_at IS NULL AS sent_before,
       s.field_hashes::text AS field_hashes
FROM changed ch
LEFT JOIN public.customers c ON c.account_id = $1 AND c.id = ch.entity_key
LEFT JOIN braze_sync.customer_state s ON s.account_id = $1 AND s.customer_id = ch.entity_key
ORDER BY ch.first_id
"""

STATE_SCHEMA = {"key": pl.String, "hashes": pl.String, "deleted": pl.Boolean}


def value_hash(value: Any) -> str:
    """A short, stable hash of a field's value (null included)."""
    return hashlib.blake2b(orjson.dumps(value), digest_size=8).hexdigest()


class _Fields:
    """Collects one profile's fields and the reasons for the ones dropped."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.dropped: dict[str, str] = {}
        #: fields sent, but not as written (an array cut to Braze's length)
        self.notes: dict[str, str] = {}

    def put(self, name: str, value: Any) -> None:
        self.values[name] = value

    def drop(self, name: str, why: str) -> None:
        self.dropped[name] = f"field {name} dropped: {why}"

    def text(self, name: str, value: str | None) -> None:
        if value is not None and len(value) > MAX_STRING:
            self.drop(name, f"longer than {MAX_STRING} characters")
        else:
            self.put(name, value)

    def json_object(self, name: str, raw: str | None) -> dict[str, Any]:
        """A jsonb column that must hold an object; `{}` (and the column dropped) when it does not."""
        try:
            value = _json(raw)
        except ValueError as exc:
            self.drop(name, str(exc))
            return {}
        if not isinstance(value, dict):
            self.drop(name, "not a JSON object")
            return {}
        return value


def _phone(raw: str, country: str | None) -> str:
    try:
        number = phonenumbers.parse(raw, country if country in COUNTRIES else None)
    except phonenumbers.NumberParseException:
        return raw.strip()
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return raw.strip()


def _number(raw: str | None) -> int | float | None:
    """A numeric column as JSON's number; ValueError when JSON cannot carry it (NaN, infinities,
    beyond a double's range)."""
    if raw is None:
        return None
    value = Decimal(raw)
    if not value.is_finite():
        raise ValueError("not a finite number")
    if value == value.to_integral_value() and abs(value) < 2**63:
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("beyond a double's range")
    return number


def _json(raw: str | None) -> Any:
    """A jsonb column's value; ValueError when orjson cannot read it (1e400, 1,000+ levels)."""
    try:
        return orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise ValueError("holds a number out of range or nests over 1,000 levels") from None


def map_profile(row: dict[str, Any], *, tags: bool, today: date | None = None) -> _Fields:
    """The Braze fields of one customer row (all of them, nulls included), and the drops."""
    today = today or date.today()
    f = _Fields()
    email = row["email"].strip() if row["email"] is not None else None
    if email is not None and (len(email) > MAX_STRING or not EMAIL.match(email)):
        f.drop("email", "not a valid email address")
    else:
        f.put("email", email)
    country = row["country"].strip().upper() if row["country"] is not None else None
    if country is not None and country not in COUNTRIES:
        f.drop("country", "not an ISO 3166-1 alpha-2 code")
        country = None
    else:
        f.put("country", country)
    phone = _phone(row["phone"], country) if row["phone"] is not None else None
    f.text("phone", phone)
    f.text("first_name", row["first_name"])
    f.text("last_name", row["last_name"])
    f.text("home_city", row["city"])
    language = row["language"]
    if language is not None:
        code = re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower()
        if code in LANGUAGES:
            f.put("language", code)
        else:
            f.drop("language", "not an ISO 639-1 language code")
    else:
        f.put("language", None)
    gender = row["gender"]
    if gender is None or gender.strip().upper() in GENDERS:
        f.put("gender", GENDERS[gender.strip().upper()] if gender is not None else None)
    else:
        f.drop("gender", "not MALE, FEMALE or OTHER")
    dob = row["dob"]
    if dob is not None and (date.fromisoformat(dob) > today or date.fromisoformat(dob).year < MIN_DOB_YEAR):
        f.drop("dob", "in the future" if date.fromisoformat(dob) > today else f"before {MIN_DOB_YEAR}")
    else:
        f.put("dob", dob)
    f.text("masivo_status", row["status"])
    f.text("masivo_tier", row["tier"])
    try:
        f.put("masivo_points", _number(row["points"]))
    except ValueError as exc:
        f.drop("masivo_points", str(exc))
    custom = f.json_object("attributes", row["attributes"])
    flat, problems, notes = flatten_fields(custom)
    for key, problem in problems.items():
        f.dropped[_custom_name(key)] = f"custom attribute dropped: {problem}"
    for key, value in flat.items():
        name = _custom_name(key)
        if name in f.values:  # `email` and `attr_email` both want `attr_email`: the first keeps it
            f.dropped[key] = f"custom attribute dropped: '{key[:60]}' collides with '{name[:60]}'"
        else:
            f.put(name, value)
    for key, note in notes.items():
        f.notes[_custom_name(key)] = f"field {_custom_name(key)} truncated: {note}"
    if tags:
        for key, value in f.json_object("tags", row["tags"]).items():
            name = TAG_PREFIX + str(key)
            if len(name) > MAX_STRING:
                f.drop(name[:60] + "...", f"key longer than {MAX_STRING} characters")
            elif isinstance(value, dict | list):
                f.drop(name, "not a string, number or boolean")
            elif isinstance(value, str):
                f.text(name, value)
            else:
                f.put(name, value)
    return f


def owned_by_customers(key: str) -> bool:
    """Whether a custom attribute key belongs to this entity's `masivo_` namespace (fields, tags)."""
    return key in CUSTOMER_KEYS or key.startswith(TAG_PREFIX)


def _custom_name(key: str) -> str:
    # a custom key must not shadow a standard field, a key Braze reads as an instruction (its
    # control keys start with `_`: any such key is assumed reserved), or our own masivo_ attributes
    reserved = key in STANDARD_FIELDS or key in CONTROL_KEYS or key.startswith(("_", "masivo_"))
    return CUSTOM_PREFIX + key if reserved else key


class CustomersEntity(Entity):
    """Customers as Braze user profiles: create, update (changed fields only), delete, tags."""

    name = "customers"
    captured = ("customers",)
    toggle = UPDATE
    extra_toggles = (CREATE, DELETE, TAGS)
    extract_sql = EXTRACT_SQL
    idempotent = True  # attribute sets and deletes can be repeated without harm (only billed)

    def is_enabled(self, account: AccountConfig) -> bool:
        """The flow runs when any of create, update or delete is on."""
        return any(account.is_on(t) for t in (CREATE, UPDATE, DELETE))

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Decide per customer: upsert, delete, or skip (toggle off, deleted before ever sent)."""
        on = {t: ctx.toggles.get(t, False) for t in self.toggles}
        # an empty id is refused by Braze too (in a delete: the whole request)
        new, active = pl.col("active") & ~pl.col("sent_before"), pl.col("active")
        verdict = first_rule(
            [
                *customer_id_rules("key"),
                (new, "upsert" if on[CREATE] else "skip:create toggle off"),
                (active, "upsert" if on[UPDATE] else "skip:update toggle off"),
                (~pl.col("sent_before"), "skip:deleted before it was ever sent"),
            ],
            otherwise="delete" if on[DELETE] else "skip:delete toggle off",
        ).alias("action")
        action = pl.col("action")
        return judge(
            frame.with_columns(verdict), pl.when(action.is_in(["upsert", "delete"])).then(None).otherwise(action)
        )

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Changed fields as one attributes object per customer; deletes as delete objects."""
        tags = ctx.toggles.get(TAGS, False)
        keys, arrays, bodies = [], [], []
        state_rows: list[tuple[str, str | None, bool]] = []
        drops: list[tuple[str, str, str]] = []
        notes: list[tuple[str, str, str]] = []
        extra = {"_update_existing_only": True} if update_only(ctx) else {}
        sent = full = 0
        for row in frame.iter_rows(named=True):
            key = row["key"]
            if row["action"] == "delete":
                keys.append(key)
                arrays.append("delete")
                bodies.append(b"")
                state_rows.append((key, None, True))
                continue
            fields = map_profile(row, tags=tags)
            drops.extend((key, "field", reason) for reason in fields.dropped.values())
            notes.extend((key, "field", note) for note in fields.notes.values())
            previous: dict[str, str] = orjson.loads(row["field_hashes"]) if row["sent_before"] else {}
            hashes = {name: value_hash(value) for name, value in fields.values.items()}
            changed = {
                name: value
                for name, value in fields.values.items()
                if previous.get(name) != hashes[name] and (row["sent_before"] or value is not None)
            }
            kept = dict(hashes)
            for name, old in previous.items():
                if name in hashes:
                    continue
                if name in fields.dropped or (name.startswith(TAG_PREFIX) and not tags):
                    kept[name] = old  # not sent this time: remember what Braze still has
                else:
                    changed[name] = None  # the key disappeared: remove the attribute in Braze
            full += sum(v is not None for v in fields.values.values())
            if not changed:
                continue  # nothing Braze does not already have: no data point spent
            sent += len(changed)
            keys.append(key)
            arrays.append("attributes")
            bodies.append(orjson.dumps({"external_id": key, **changed, **extra}))
            state_rows.append((key, orjson.dumps(kept).decode(), False))
        return Prepared(
            frame=pl.DataFrame({"key": keys, "array": arrays, "body": bodies}, schema=OBJECT_SCHEMA),
            rejected=pl.DataFrame(drops + notes, schema=REJECT_SCHEMA, orient="row"),
            state=pl.DataFrame(state_rows, schema=STATE_SCHEMA, orient="row"),
            metrics={
                "attributes_sent": sent,
                "attributes_full_resend": full,
                "fields_dropped": len(drops),
                "arrays_truncated": len(notes),
            },
        )

    def commit_state(self, conn: psycopg.Connection, ctx: AccountContext, state: pl.DataFrame) -> None:
        """Remember the hashes of what was delivered; mark delivered deletes."""
        upserts = state.filter(~pl.col("deleted"))
        deletes = state.filter(pl.col("deleted"))
        if upserts.height:
            conn.execute(
                """
                INSERT INTO braze_sync.customer_state (account_id, customer_id, field_hashes)
                SELECT %s, k, h::jsonb FROM unnest(%s::text[], %s::text[]) AS u(k, h)
                ON CONFLICT (account_id, customer_id) DO UPDATE SET
                  field_hashes = EXCLUDED.field_hashes, last_sent_at = now(),
                  first_sent_at = CASE WHEN customer_state.deleted_at IS NULL
                                       THEN customer_state.first_sent_at ELSE now() END,
                  deleted_at = NULL
                """,
                (ctx.account_id, upserts["key"].to_list(), upserts["hashes"].to_list()),
            )
        if deletes.height:
            conn.execute(
                "UPDATE braze_sync.customer_state SET deleted_at = now(), field_hashes = '{}'::jsonb "
                "WHERE account_id = %s AND customer_id = ANY(%s)",
                (ctx.account_id, deletes["key"].to_list()),
            )

    def full_resync(self, conn: psycopg.Connection, account_id: str, *, resend: bool) -> int:
        """Forget what was delivered (a new workspace has none of it) and queue every customer."""
        conn.execute("DELETE FROM braze_sync.customer_state WHERE account_id = %s", (account_id,))
        return super().full_resync(conn, account_id, resend=resend)


CUSTOMERS = CustomersEntity()
