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

from math import isfinite
from typing import Any

import orjson
import polars as pl
import psycopg

from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.entities.base import (
    OBJECT_SCHEMA,
    REJECT_SCHEMA,
    AccountContext,
    Entity,
    Prepared,
    judge,
    update_only,
)
from masivo_braze_sync.errors import RecordRejected
from masivo_braze_sync.properties import (
    MAX_DEPTH,
    MAX_KEY,
    MAX_PROPERTIES,
    MAX_STRING,
    RESERVED_KEYS,
    flatten_truncated,
)

#: Masivo's own event types, never forwarded; upper case, without `$` (how names are compared)
INTERNAL_EVENT_TYPES = frozenset(
    {"REGISTRATION", "FULFILL", "REVERSE", "EXPIRE", "CANCEL", "REDEEM_COUPON", "TIER_ADJUSTMENT"}
)
MAX_EXTERNAL_ID_BYTES = BRAZE.external_id_bytes
UNREADABLE_PROPERTIES = "properties hold a number out of range or nest over 1,000 levels"

EXTRACT_SQL = """
WITH log AS (
    -- the index (entity, account_id, txid, id) yields the range in change order: numbering it needs no sort
    SELECT entity_key, row_number() OVER (ORDER BY txid, id) AS ord
    FROM braze_sync.change_log
    WHERE entity = 'events' AND account_id = $1
      AND (txid, id) > ($2::text::xid8, $3::bigint) AND (txid, id) <= ($4::text::xid8, $5::bigint)
), changed AS (
    SELECT entity_key, min(ord) AS log_ord FROM log GROUP BY entity_key
)
SELECT ch.entity_key AS key,
       ch.log_ord,
       e.id IS NOT NULL AS present,
       e.customer_id,
       e.type,
       e.properties::text AS properties,
       e.occurred_at,
       CASE WHEN c.id IS NULL THEN 'missing'
            WHEN c.deleted_at IS NOT NULL THEN 'deleted'
            ELSE 'active' END AS customer_state
FROM changed ch
LEFT JOIN public.events e ON e.id = ch.entity_key AND e.account_id = $1
LEFT JOIN public.customers c ON c.account_id = $1 AND c.id = e.customer_id
"""


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
    key = path.lstrip("$") if path[:1] == "$" else path
    key = RESERVED_KEYS.get(key, key)
    entry = (key if key and len(key) <= MAX_KEY else None, {}, path + "_")
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
            continue  # not sent (properties.py): nor counted, nor checked for collisions
        elif kind is float:
            if not isfinite(value):
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
    """`properties.flatten_truncated`, with a fast path for what orjson parses from Postgres.

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


class EventsEntity(Entity):
    """Behavioral events as Braze custom events."""

    name = "events"
    captured = ("events",)
    after_customers = True  # docs/live.md#profile-before-event
    toggle = "sync_events"
    extract_sql = EXTRACT_SQL
    extract_order = "log_ord"
    #: the rows read depend only on Masivo's tables, never on what the sync commits: the next
    #: range may be read while a batch is delivered (`AccountRun.step`)
    read_ahead = True
    #: one object per key, in the order read (`log_ord`), skipped keys named: a full batch may end
    #: at a whole request (`AccountRun.fit`)
    whole_requests = True

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Drop what is never sent and reject what Braze would refuse, on whole columns."""
        name = pl.col("type").fill_null("").str.strip_chars_start("$")  # Braze refuses a leading `$`
        verdict = (
            pl.when(~pl.col("present"))
            .then(pl.lit("skip:event deleted before it was sent"))
            .when(name.str.to_uppercase().is_in(list(INTERNAL_EVENT_TYPES)))
            .then(pl.lit("skip:internal event"))
            .when(pl.col("customer_state") == "deleted")
            .then(pl.lit("skip:customer deleted"))
            .when(pl.col("customer_state") == "missing")
            .then(pl.lit("reject:customer not found"))
            .when(pl.col("customer_id").fill_null("").str.len_bytes() == 0)
            .then(pl.lit("reject:customer id is empty"))
            .when(pl.col("customer_id").str.len_bytes() > MAX_EXTERNAL_ID_BYTES)
            .then(pl.lit(f"reject:customer id is longer than {MAX_EXTERNAL_ID_BYTES} bytes"))
            .when(name.str.len_chars() == 0)
            .then(pl.lit("reject:event type is empty"))
            .when(name.str.len_chars() > MAX_STRING)
            .then(pl.lit(f"reject:event type is longer than {MAX_STRING} characters"))
            .otherwise(pl.lit(None, dtype=pl.String))
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
