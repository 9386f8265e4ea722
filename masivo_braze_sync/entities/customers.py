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

from datetime import date
from operator import itemgetter

import orjson
import polars as pl
import psycopg

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.entities import profile
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
from masivo_braze_sync.entities.profile import TAG_PREFIX, value_hash

__all__ = ["CUSTOMERS", "CUSTOMER_KEYS", "CustomersEntity", "owned_by_customers", "value_hash"]

#: the toggles of this entity (`braze_integrations` columns)
CREATE, UPDATE, DELETE = "sync_customers_create", "sync_customers_update", "sync_customers_delete"
TAGS = "sync_customer_tags"
#: the custom attributes this entity owns under `masivo_`: no audience may write them
CUSTOMER_KEYS = frozenset({"masivo_status", "masivo_tier", "masivo_points"})

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


def owned_by_customers(key: str) -> bool:
    """Whether a custom attribute key belongs to this entity's `masivo_` namespace (fields, tags)."""
    return key in CUSTOMER_KEYS or key.startswith(TAG_PREFIX)


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
        # the state rows, column by column: key, hashes (JSON text; None for a delete), deleted
        state_keys: list[str] = []
        state_hashes: list[str | None] = []
        state_deleted: list[bool] = []
        drops: list[tuple[str, str, str]] = []
        notes: list[tuple[str, str, str]] = []
        extra = {"_update_existing_only": True} if update_only(ctx) else {}
        sent = full = 0
        columns = {name: frame[name].to_list() for name in frame.columns}
        # each rule once per distinct value of its column (entities/profile.py), then row by row
        upserts = [a != "delete" for a in columns["action"]]
        # (rows to delete are mapped too, unused: cheaper than leaving them out of every column)
        standard = profile.standard_columns(columns, date.today())
        # per row, per standard field: drop reason (None when sent), body and state member, and
        # (only for rows that are not simple, below) value and hash
        drops_, bodies_, states_ = (_rows(standard, i) for i in (2, 3, 4))
        # the JSON columns: one segment per distinct text in the batch
        customs = profile.segments(profile.attributes, columns["attributes"])
        tagged_ = profile.segments(profile.tags, columns["tags"]) if tags else [None] * len(upserts)
        # a row is simple when it is a new profile and no field of it is dropped
        simple = [
            not was_sent and not custom.drops and (tagged is None or not tagged.drops) and not any(whys)
            for was_sent, custom, tagged, whys in zip(columns["sent_before"], customs, tagged_, drops_, strict=True)
        ]
        # a simple row's standard part: its body and state members joined, and how many values
        std_body = [b"".join(filter(None, members)) for members in bodies_]
        std_state = [b"".join(filter(None, members)) for members in states_]  # (None: dropped, not simple)
        std_present = [len(members) - members.count(None) for members in bodies_]  # no drop: None is null
        names = [name for name, _ in profile.STANDARD]
        n = len(upserts)
        values_, hashes_ = (_rows(standard, i) for i in (0, 1)) if not all(simple) else ([None] * n, [None] * n)
        extra_member = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in extra.items())
        for (
            key, upsert, is_simple, sent_before, field_hashes, custom, tagged,
            row_values, row_hashes, row_drops, row_body, row_state, row_present,
        ) in zip(
            columns["key"], upserts, simple, columns["sent_before"], columns["field_hashes"], customs, tagged_,
            values_, hashes_, drops_, std_body, std_state, std_present, strict=True,
        ):  # fmt: skip
            if not upsert:
                keys.append(key)
                arrays.append("delete")
                bodies.append(b"")
                state_keys.append(key)
                state_hashes.append(None)
                state_deleted.append(True)
                continue
            if is_simple:
                # the usual new profile: every field with a value is sent, and every hash kept; the
                # body and state are joined from the fields' JSON members (`profile.with_members`)
                present = row_present + custom.present
                body = row_body + custom.body
                state = row_state + custom.state
                if tagged is not None:
                    present += tagged.present
                    body += tagged.body
                    state += tagged.state
                full += present
                if not present:
                    continue  # nothing to send (a profile of nulls only)
                sent += present
                keys.append(key)
                arrays.append("attributes")
                bodies.append(b'{"external_id":' + orjson.dumps(key) + body + extra_member + b"}")
                state_keys.append(key)
                state_hashes.append("{" + state[1:].decode() + "}")
                state_deleted.append(False)
                if custom.notes:
                    notes.extend((key, "field", note) for _, note in custom.notes)
                continue
            if any(row_drops):
                values, hashes, dropped = {}, {}, {}
                for name, value, hashed, why in zip(names, row_values, row_hashes, row_drops, strict=True):
                    if why is None:
                        values[name] = value
                        hashes[name] = hashed
                    else:
                        dropped[name] = why
                present = len(values) - list(values.values()).count(None)
            else:
                values = dict(zip(names, row_values, strict=True))
                hashes = dict(zip(names, row_hashes, strict=True))
                dropped = {}
                present = len(row_values) - row_values.count(None)
            parts = [custom] if tagged is None else [custom, tagged]
            for part in parts:
                values.update(part.values)
                hashes.update(part.hashes)
                if part.drops:
                    dropped.update(part.drops)  # in order: a later drop of a key replaces the earlier
                present += part.present
            if dropped:
                drops.extend((key, "field", reason) for reason in dropped.values())
            if custom.notes:
                notes.extend((key, "field", note) for _, note in custom.notes)
            if sent_before:
                previous: dict[str, str] = orjson.loads(field_hashes)
                changed = {name: value for name, value in values.items() if previous.get(name) != hashes[name]}
                kept = dict(hashes)
                for name, old in previous.items():
                    if name in hashes:
                        continue
                    if name in dropped or (name.startswith(TAG_PREFIX) and not tags):
                        kept[name] = old  # not sent this time: remember what Braze still has
                    else:
                        changed[name] = None  # the key disappeared: remove the attribute in Braze
            else:  # a new profile: every field that has a value
                changed = {name: value for name, value in values.items() if value is not None}
                kept = hashes
            full += present
            if not changed:
                continue  # nothing Braze does not already have: no data point spent
            sent += len(changed)
            keys.append(key)
            arrays.append("attributes")
            bodies.append(orjson.dumps({"external_id": key, **changed, **extra}))
            state_keys.append(key)
            state_hashes.append(orjson.dumps(kept).decode())
            state_deleted.append(False)
        return Prepared(
            frame=pl.DataFrame({"key": keys, "array": arrays, "body": bodies}, schema=OBJECT_SCHEMA),
            rejected=pl.DataFrame(drops + notes, schema=REJECT_SCHEMA, orient="row"),
            state=pl.DataFrame(
                {"key": state_keys, "hashes": state_hashes, "deleted": state_deleted}, schema=STATE_SCHEMA
            ),
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


def _rows(columns: list[list[tuple]], i: int) -> list[tuple]:
    """Item `i` of each column's outcomes, as one tuple per row."""
    pick = itemgetter(i)
    return list(zip(*(map(pick, column) for column in columns), strict=True))


CUSTOMERS = CustomersEntity()
