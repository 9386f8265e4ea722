"""Masivo behavioral events → Braze custom events (`/users/track` `events`, docs/braze.md#event-object).

Events are immutable facts: only their insertion is captured, and each is sent once.
Rules, in order:
- skipped (never sent, counted): the event row was deleted before the sync read it; the type is
  an internal Masivo event, compared as Braze would store the name (without case and without a
  leading `$`: `$FULFILL` and `registration` are internal); the customer is deleted (Braze would
  re-create the profile);
- rejected (recorded with the reason): the customer does not exist, its id is empty or longer
  than 987 bytes, the event type is empty or over 255 characters, or the properties cannot be
  made valid (see `properties.py`);
- sent with a note (stage `field`, counted in the summary's `field_notes`): more than 256
  properties after flattening; Braze would keep only 256, so 256 are chosen here
  (`properties.flatten_truncated`) rather than losing an event that may trigger a campaign.
With the customers' Create toggle off, every event is update-only (`_update_existing_only`):
an event never creates a profile (docs/braze.md#user-attributes-object).
"""

from __future__ import annotations

import orjson
import polars as pl
import psycopg

from masivo_braze_sync.entities.base import (
    CUSTOMER_DELETED,
    CUSTOMER_STATE_SQL,
    IN_LOG_RANGE,
    IN_READ_PART,
    LOG_ROW_SQL,
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
from masivo_braze_sync.errors import RecordRejected
from masivo_braze_sync.properties import MAX_STRING, flatten_event_properties

#: Masivo's own event types, never forwarded; upper case, without `$` (how names are compared)
INTERNAL_EVENT_TYPES = frozenset(
    {"REGISTRATION", "FULFILL", "REVERSE", "EXPIRE", "CANCEL", "REDEEM_COUPON", "TIER_ADJUSTMENT"}
)
UNREADABLE_PROPERTIES = "properties hold a number out of range or nest over 1,000 levels"

EXTRACT_SQL = f"""
WITH l AS (
    SELECT entity_key, txid, id FROM braze_sync.change_log
    WHERE entity = 'events' AND {IN_LOG_RANGE} AND {IN_READ_PART}
)
-- one row per log row, unordered: `Entity.extract` numbers them and keeps each key's first
SELECT {LOG_ROW_SQL},
       e.id IS NOT NULL AS present,
       e.customer_id,
       e.type,
       e.properties::text AS properties,
       e.occurred_at,
       {CUSTOMER_STATE_SQL}
FROM l
LEFT JOIN public.events e ON e.id = l.entity_key AND e.account_id = $1
LEFT JOIN public.customers c ON c.account_id = $1 AND c.id = e.customer_id
"""


class EventsEntity(Entity):
    """Behavioral events as Braze custom events."""

    name = "events"
    captured = ("events",)
    after_customers = True  # docs/live.md#profile-before-event
    toggle = "sync_events"
    extract_sql = EXTRACT_SQL
    log_rows = True
    #: the rows read depend only on Masivo's tables, never on what the sync commits: the next
    #: range may be read while a batch is delivered (`AccountRun.step`)
    read_ahead = True
    #: one object per key, in the order read (`log_ord`), skipped keys named: a full batch may end
    #: at a whole request (`AccountRun.fit`)
    whole_requests = True

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Drop what is never sent and reject what Braze would refuse, on whole columns."""
        name = pl.col("type").fill_null("").str.strip_chars_start("$")  # Braze refuses a leading `$`
        verdict = first_rule(
            [
                (~pl.col("present"), "skip:event deleted before it was sent"),
                (name.str.to_uppercase().is_in(list(INTERNAL_EVENT_TYPES)), "skip:internal event"),
                CUSTOMER_DELETED,
                customer_missing(),
                *customer_id_rules(),
                (name.str.len_chars() == 0, "reject:event type is empty"),
                (name.str.len_chars() > MAX_STRING, f"reject:event type is longer than {MAX_STRING} characters"),
            ]
        )
        return judge(frame.with_columns(name.alias("name")), verdict)

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Each valid row to one Braze event object, serialised once, here."""
        times = frame.get_column("occurred_at").dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        keys: list[str] = []
        bodies: list[bytes] = []
        rejected: list[tuple[str, str]] = []
        notes: list[tuple[str, str]] = []
        extra = {"_update_existing_only": True} if update_only(ctx) else {}
        dumps, loads = orjson.dumps, orjson.loads
        for key, customer_id, name, raw, time in zip(
            frame.get_column("key").to_list(),
            frame.get_column("customer_id").to_list(),
            frame.get_column("name").to_list(),
            frame.get_column("properties").to_list(),
            times.to_list(),
            strict=True,
        ):
            event = {"external_id": customer_id, "name": name, "time": time, **extra}
            if raw and raw != "{}":
                try:
                    parsed = loads(raw)
                    if not isinstance(parsed, dict):
                        raise RecordRejected("properties are not a JSON object")
                    props, total = flatten_event_properties(parsed)
                except RecordRejected as exc:
                    rejected.append((key, exc.reason))
                    continue
                except orjson.JSONDecodeError:  # jsonb holds what a double cannot (1e400), or 1,000+ levels
                    rejected.append((key, UNREADABLE_PROPERTIES))
                    continue
                if props:
                    event["properties"] = props
                if total > len(props):
                    notes.append((key, f"{total} properties after flattening: the {len(props)} Braze keeps were sent"))
            keys.append(key)
            # orjson hands back its whole write buffer (4 KiB for a 250-byte event: 80 MB held per
            # 20,000-row batch, measured); a copy keeps only the bytes, for ~0.25 us a row
            bodies.append(bytes(memoryview(dumps(event))))
        objects = pl.DataFrame({"key": keys, "array": ["events"] * len(keys), "body": bodies}, schema=OBJECT_SCHEMA)
        rejects = pl.DataFrame(
            {
                "key": [k for k, _ in rejected] + [k for k, _ in notes],
                "stage": ["transform"] * len(rejected) + ["field"] * len(notes),
                "reason": [r for _, r in rejected] + [r for _, r in notes],
            },
            schema=REJECT_SCHEMA,
        )
        return Prepared(frame=objects, rejected=rejects)

    def full_resync(self, conn: psycopg.Connection, account_id: str, *, resend: bool) -> int:
        """Queue every event again; unless `resend`, leave out those the ledger says were delivered
        (Braze counts every event it receives: a second copy is a second occurrence)."""
        delivered = (
            ""
            if resend
            else """
            AND NOT EXISTS (SELECT 1 FROM delivered d WHERE d.key = e.id)"""
        )
        return conn.execute(
            f"""
            WITH delivered AS MATERIALIZED (
                SELECT DISTINCT unnest(keys) AS key FROM braze_sync.deliveries
                WHERE consumer = 'events' AND account_id = %(a)s AND status = 'delivered'
            )
            INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op)
            SELECT e.account_id, 'events', e.id, 'F' FROM public.events e
            WHERE e.account_id = %(a)s{delivered}
            ORDER BY e.occurred_at
            """,
            {"a": account_id},
        ).rowcount


EVENTS = EventsEntity()
