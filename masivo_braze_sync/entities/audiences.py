"""Masivo audience membership → Braze custom attributes (`/users/track` `attributes`).

Braze's rules: docs/braze.md#user-attributes-object.

A member of an audience has the custom attribute `masivo_<audience name>` = `true`; a customer
who leaves it (membership row deleted), or every member of a deleted audience, gets it set to
`null`; a renamed audience moves it (old key `null`, new key `true`, in one object).

The attribute key is `masivo_` + the audience name exactly as written in Masivo (spaces, case,
punctuation, `$`, `.` and any other printable character kept: `VIP Customers` → `masivo_VIP
Customers`). Only characters Braze refuses in keys are replaced, each by `_`: the non-printing
control characters (U+0000-U+001F, U+007F-U+009F: tab, newline, DEL, ...) and the line and
paragraph separators U+2028 / U+2029 (Braze: keys are printable characters only, docs/braze.md#user-attributes-object).
The prefix means a key never starts with `$`. A key must fit Braze's 255 characters (Unicode code
points), so a name longer than 248 characters has no key: a `true` for it is rejected with that
reason, a `null` for it is dropped (it can never have been set).

How changes arrive (migration 0004): every change that can move the attribute is an
`audience_members` change-log row keyed `[audience_id, customer_id]`: a join or a leave, and, fanned
out by the capture in the writing transaction, one row per member at that moment for a rename, a
soft or hard delete or an un-delete of the audience. Rows carry in `old_values.audience_name` the
name the attribute may still be held under (the name at the leave, the old name of a rename, the
name of a deleted audience), so members deleted in the same transaction as a hard delete of their
audience are still found. A 200,000-member audience is therefore 200,000 change-log rows, read in
`batch_rows` slices like any other backlog: memory is bounded by the batch, not by the audience.

One owner per key: the customers entity owns `masivo_status`, `masivo_tier`, `masivo_points` and
every `masivo_tag_*` (`customers.owned_by_customers`). An audience whose key lands on one of them
(named `tier`, `tag_vip`, ...) is refused: its `true` is rejected with `KEY_TAKEN` (in
`rejected_rows` and `status`), its `null` is never sent (it would erase the customer's value), and
its resync is refused; renaming the audience sends it. Keys are compared as written: Braze's
attribute names are case-sensitive (an assumption: its docs say so of the profile fields, and
are silent for custom ones), so `Tier` is an audience's `masivo_Tier`.

Each row is judged against the state at sync time, so replays are harmless (`idempotent`):
- `true` for the audience's current name when the audience is live (no `deleted_at`) and the
  customer is a member now;
- `null` for every other name the row involves (old names, the name of a deleted audience, the
  current name when the customer is no longer a member), unless the customer is a member now of
  another live audience with that same name (two audiences named alike share one attribute);
- all of a customer's rows in a batch become one attributes object. An object with only `null`s
  carries `_update_existing_only: true`, so a `null` never creates a profile in Braze.
Skipped (never sent, counted): the customer is deleted (soft or hard: Braze would re-create the
profile), or nothing is left to send. Rejected (recorded): an empty or over-long customer id, a name
too long for a key (see above), a key a customer field owns.

Rows rejected before sending are keyed by their change-log key `[audience_id, customer_id]`; an
object Braze refuses is keyed by customer id (one object per customer), which `retry-rejected`
queues again and the extract expands to the customer's current memberships. `sync --full` queues
every current membership. The manual resync of one audience is `masivo_braze_sync/resync.py`.
"""

from __future__ import annotations

import re

import orjson
import polars as pl
import psycopg

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.entities.base import (
    CUSTOMER_DELETED,
    CUSTOMER_STATE_SQL,
    IN_LOG_RANGE,
    OBJECT_SCHEMA,
    REJECT_SCHEMA,
    AccountContext,
    Entity,
    Prepared,
    customer_id_rules,
    customer_missing,
    first_rule,
    judge,
    update_only,
)
from masivo_braze_sync.entities.customers import owned_by_customers

KEY_PREFIX = "masivo_"
#: the consumer of the manual resync of one audience (`masivo_braze_sync/resync.py`)
RESYNC_CONSUMER = "audiences-resync"
MAX_KEY_CHARS = BRAZE.string_chars  # custom attribute keys: docs/braze.md#user-attributes-object
#: characters Braze refuses in keys (not printable): C0 and C1 controls, line/paragraph separators
REFUSED_KEY_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
NAME_TOO_LONG = (
    f"audience name is too long for a Braze attribute key ({KEY_PREFIX} + name > {MAX_KEY_CHARS} characters)"
)

KEY_TAKEN = (
    "the audience's attribute key belongs to a customer field "
    "(masivo_status, masivo_tier, masivo_points, masivo_tag_*): rename the audience"
)


def _key(name: str) -> str:
    return KEY_PREFIX + REFUSED_KEY_CHARS.sub("_", name)


def key_problem(name: str) -> str | None:
    """Why an audience name has no attribute key of its own (too long, or a customer field's), or None."""
    key = _key(name)
    if len(key) > MAX_KEY_CHARS:
        return NAME_TOO_LONG
    return KEY_TAKEN if owned_by_customers(key) else None


def attribute_key(name: str) -> str | None:
    """The custom attribute key of an audience name, or None when it has none of its own
    (`key_problem` says why): no valid key can hold the name, or a customer field owns it."""
    return None if key_problem(name) else _key(name)


EXTRACT_SQL = f"""
WITH changed AS (
    SELECT entity_key, min(id) AS first_id,
           array_agg(DISTINCT old_values->>'audience_name')
             FILTER (WHERE old_values->>'audience_name' IS NOT NULL) AS old_names
    FROM braze_sync.change_log
    WHERE entity = 'audience_members' AND {IN_LOG_RANGE}
    GROUP BY entity_key
), pairs AS (
    SELECT ch.entity_key AS key, ch.first_id,
           (ch.entity_key::jsonb)->>0 AS audience_id,
           (ch.entity_key::jsonb)->>1 AS customer_id,
           coalesce(ch.old_names, '{{}}') AS old_names
    FROM changed ch
    WHERE left(ch.entity_key, 1) = '['
    UNION ALL
    -- a customer id queued again (`retry-rejected` of an object Braze refused): all its memberships
    SELECT jsonb_build_array(m.audience_id, m.customer_id)::text, ch.first_id, m.audience_id, m.customer_id, '{{}}'
    FROM changed ch
    JOIN public.audience_members m ON m.account_id = $1 AND m.customer_id = ch.entity_key
    WHERE left(ch.entity_key, 1) <> '['
), rows AS (
    SELECT p.key, p.first_id, p.audience_id, p.customer_id,
           a.name AS audience_name,
           (a.id IS NOT NULL AND a.deleted_at IS NULL AND EXISTS (
               SELECT 1 FROM public.audience_members m
               WHERE m.account_id = $1 AND m.audience_id = p.audience_id AND m.customer_id = p.customer_id
           )) AS is_member,
           ARRAY(SELECT DISTINCT n FROM unnest(p.old_names || a.name) n WHERE n IS NOT NULL) AS names
    FROM pairs p
    LEFT JOIN public.audiences a ON a.account_id = $1 AND a.id = p.audience_id
), live AS MATERIALIZED (
    -- live audiences whose name is involved in this batch (a name may belong to several)
    SELECT a.id, a.name FROM public.audiences a
    WHERE a.account_id = $1 AND a.deleted_at IS NULL
      AND a.name IN (SELECT DISTINCT unnest(r.names) FROM rows r)
)
SELECT r.key, r.audience_id, r.customer_id, r.audience_name, r.is_member, r.names,
       -- names the customer holds through another live audience (a scalar subquery per audience,
       -- so the lookup always uses the whole primary key)
       ARRAY(SELECT DISTINCT l.name FROM live l
             WHERE l.id <> r.audience_id AND l.name = ANY(r.names)
               AND (SELECT true FROM public.audience_members m
                    WHERE m.account_id = $1 AND m.audience_id = l.id AND m.customer_id = r.customer_id))
         AS held_elsewhere,
       {CUSTOMER_STATE_SQL}
FROM rows r
LEFT JOIN public.customers c ON c.account_id = $1 AND c.id = r.customer_id
ORDER BY r.first_id
"""


def _rejects(keys: list[str], reasons: list[str], stage: str) -> pl.DataFrame:
    return pl.DataFrame({"key": keys, "stage": [stage] * len(keys), "reason": reasons}, schema=REJECT_SCHEMA)


def judge_customers(frame: pl.DataFrame) -> Prepared:
    """Drop deleted customers (counted) and reject ids Braze would refuse (columns `key`,
    `customer_id`, `customer_state`); shared by the sync and the resync."""
    # a membership row may outlive its customer: nothing to set, nothing wrong with the row
    return judge(frame, first_rule([CUSTOMER_DELETED, customer_missing("skip"), *customer_id_rules()]))


def attribute_objects(values: dict[str, dict[str, bool | None]], *, update_only: bool = False) -> pl.DataFrame:
    """One attributes object per customer (the ledger key): {"external_id", key: true|null, ...}.

    An object that only removes attributes is update-only: a `null` never creates a profile; with
    `update_only` (the Create toggle off) every object is.
    """
    dumps = orjson.dumps
    keys = list(values)
    bodies = []
    for customer_id, attrs in values.items():
        obj: dict[str, object] = {"external_id": customer_id}
        obj.update(attrs)
        if update_only or not any(attrs.values()):
            obj["_update_existing_only"] = True
        bodies.append(dumps(obj))
    return pl.DataFrame({"key": keys, "array": ["attributes"] * len(keys), "body": bodies}, schema=OBJECT_SCHEMA)


class AudiencesEntity(Entity):
    """Audience membership as `masivo_<audience name>` custom attributes."""

    name = "audiences"
    captured = ("audience_members",)  # audience-level changes are fanned out to members (0004)
    after_customers = True  # docs/live.md#profile-before-event
    toggle = "sync_audiences"
    extract_sql = EXTRACT_SQL
    idempotent = True  # attribute sets computed from the state at sync time
    #: a resync's refused object is keyed by customer id, which this sync's extract expands to the
    #: customer's current memberships (the resynced audience among them)
    retries_rejected_of = (RESYNC_CONSUMER,)

    def full_resync(self, conn: psycopg.Connection, account_id: str, *, resend: bool) -> int:
        """Queue every current membership of the account (`sync --full`): each live audience's
        attribute is sent as `true` again. Attribute sets are idempotent: `resend` changes nothing."""
        return conn.execute(
            "INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) "
            "SELECT account_id, 'audience_members', jsonb_build_array(audience_id, customer_id)::text, 'F' "
            "FROM public.audience_members WHERE account_id = %s",
            (account_id,),
        ).rowcount

    def requeue_entries(self, keys: list[str]) -> list[tuple[str, str]]:
        """Rows rejected before sending are keyed `[audience_id, customer_id]`; objects Braze refused
        are keyed by customer id, which the extract expands to the customer's current memberships."""
        return [("audience_members", key) for key in keys]

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Deleted customers are skipped, unusable ids rejected."""
        return judge_customers(frame)

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Each row's `true` and `null` attributes, merged into one object per customer."""
        key_of: dict[str, str | None] = {}
        values: dict[str, dict[str, bool | None]] = {}
        rejected_keys: list[str] = []
        reasons: list[str] = []
        nothing = set_true = set_null = 0
        for key, customer_id, name, is_member, names, held in zip(
            frame.get_column("key").to_list(),
            frame.get_column("customer_id").to_list(),
            frame.get_column("audience_name").to_list(),
            frame.get_column("is_member").to_list(),
            frame.get_column("names").to_list(),
            frame.get_column("held_elsewhere").to_list(),
            strict=True,
        ):
            held = set(held or ())
            attrs: dict[str, bool | None] = {}
            for n in names or ():
                if n not in held:
                    k = key_of[n] if n in key_of else key_of.setdefault(n, attribute_key(n))
                    if k is not None:  # an over-long name never had a key; a customer's is not ours
                        attrs[k] = None
            if is_member:
                k = key_of[name] if name in key_of else key_of.setdefault(name, attribute_key(name))
                if k is None:  # too long, or a customer field's: a `true` is refused
                    rejected_keys.append(key)
                    reasons.append(key_problem(name) or NAME_TOO_LONG)
                else:
                    attrs[k] = True
            if not attrs:
                nothing += not (rejected_keys and rejected_keys[-1] == key)
                continue
            merged = values.setdefault(customer_id, {})
            for k, v in attrs.items():
                merged[k] = merged.get(k) or v  # a `true` wins over a `null` for the same key
        for attrs in values.values():
            n_true = sum(1 for v in attrs.values() if v)
            set_true += n_true
            set_null += len(attrs) - n_true
        return Prepared(
            frame=attribute_objects(values, update_only=update_only(ctx)),
            rejected=_rejects(rejected_keys, reasons, "transform"),
            skipped={"nothing to send": nothing} if nothing else {},
            metrics={"attributes_set": set_true, "attributes_nulled": set_null},
        )


AUDIENCES = AudiencesEntity()
