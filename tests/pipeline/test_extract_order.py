"""The events extract: one row per key, numbered and ordered as the change log orders the range.

The read returns one row per change-log row and the client keeps each key's first (`first_per_key`);
these tests hold it to what the log itself says, computed here in Python: `log_ord` is the 1-based
rank, in (txid, id) order, of the key's first row in the range, and rows come in that order.
"""

from __future__ import annotations

import polars as pl
import psycopg

from masivo_braze_sync.capture import LogRange, Position, next_range
from masivo_braze_sync.entities import ENTITIES
from masivo_braze_sync.extract import first_per_key, read_parts
from tests.capture_helpers import settle

EVENTS = ENTITIES["events"]
COLUMNS = {
    "key": pl.String,
    "log_ord": pl.Int64,
    "present": pl.Boolean,
    "customer_id": pl.String,
    "type": pl.String,
    "properties": pl.String,
    "occurred_at": pl.Datetime("us", "UTC"),
    "customer_state": pl.String,
}


def _log(db, account: str, rng: LogRange) -> list[str]:
    """The keys of the range's log rows, in change order (a key repeats when it was queued again)."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT entity_key FROM braze_sync.change_log WHERE entity = 'events' AND account_id = %s "
            "AND (txid, id) > (%s::text::xid8, %s) AND (txid, id) <= (%s::text::xid8, %s) ORDER BY txid, id",
            (account, str(rng.after.txid), rng.after.log_id, str(rng.upto.txid), rng.upto.log_id),
        ).fetchall()
    return [k for (k,) in rows]


def _first_ranks(keys: list[str]) -> list[tuple[str, int]]:
    first: dict[str, int] = {}
    for rank, key in enumerate(keys, start=1):
        first.setdefault(key, rank)
    return list(first.items())


def _backlog(db, add_events) -> dict[str, list[str]]:
    """Events whose change order differs from their log ids, keys queued twice, deleted events, and
    events of a deleted and of a missing customer."""
    with psycopg.connect(db.url) as early:
        # a transaction that starts first and writes last: its rows have the higher log ids but
        # the lower transaction id, so they come first in change order
        early.execute("SELECT pg_current_xact_id()")
        before = add_events("acct-1", 5, customer="c1")
        early.execute(
            "INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at) "
            "SELECT 'acct-1-early' || g, 'acct-1', 'c2', 'VISIT', '{\"k\": 1}', now() FROM generate_series(1, 3) g"
        )
        early.commit()
    after = add_events("acct-1", 4, customer="c2")
    gone_customer = add_events("acct-1", 2, customer="c3")
    missing = add_events("acct-1", 2, customer="nobody")
    with db.connection() as conn:
        conn.execute("UPDATE public.customers SET deleted_at = now() WHERE id = 'c3'")
        # queued again (as `sync --full` and `retry-rejected` do): the key's first row decides
        conn.execute(
            "INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) "
            "SELECT 'acct-1', 'events', k, 'F' FROM unnest(%s::text[]) k",
            ([after[1], before[0], "acct-1-early2", after[1]],),
        )
        # deleted after capture: read as not present
        conn.execute("DELETE FROM public.events WHERE id = ANY(%s)", ([before[2], after[3]],))
    settle(db, "acct-1")
    return {"before": before, "after": after, "gone_customer": gone_customer, "missing": missing}


def test_each_key_once_at_its_first_log_row_in_change_order(make_account, add_events, db) -> None:
    make_account("acct-1", customers=3)
    made = _backlog(db, add_events)
    with db.connection() as conn:
        whole = next_range(conn, entities=EVENTS.captured, account_id="acct-1", after=Position.start(), limit=1000)
        assert whole is not None
        assert whole.rows == 20
        # a range that starts inside the log: its numbering starts at 1 again
        later = next_range(conn, entities=EVENTS.captured, account_id="acct-1", after=Position.start(), limit=6)
        tail = next_range(conn, entities=EVENTS.captured, account_id="acct-1", after=later.upto, limit=1000)

    for rng in (whole, tail):
        frame = EVENTS.extract(db.url, "acct-1", rng)
        assert frame.schema == pl.Schema(COLUMNS)
        expected = _first_ranks(_log(db, "acct-1", rng))
        assert list(zip(frame["key"], frame["log_ord"], strict=True)) == expected

    frame = EVENTS.extract(db.url, "acct-1", whole)
    assert frame["key"].head(3).to_list() == ["acct-1-early1", "acct-1-early2", "acct-1-early3"]
    state = dict(zip(frame["key"], zip(frame["present"], frame["customer_state"], strict=True), strict=True))
    assert state[made["before"][2]] == state[made["after"][3]] == (False, "missing")
    assert state[made["after"][0]] == (True, "active")
    assert {state[k] for k in made["gone_customer"]} == {(True, "deleted")}
    assert {state[k] for k in made["missing"]} == {(True, "missing")}
    assert frame.filter(pl.col("key") == "acct-1-early1")["properties"].item() == '{"k": 1}'


def test_a_read_in_two_halves_returns_exactly_what_one_read_returns(make_account, add_events, db) -> None:
    make_account("acct-1", customers=3)
    made = _backlog(db, add_events)
    more = add_events("acct-1", 60, customer="c1")
    with db.connection() as conn:
        # queued again in a later transaction, after other keys of both halves
        conn.execute(
            "INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) "
            "SELECT 'acct-1', 'events', k, 'F' FROM unnest(%s::text[]) k",
            ([more[5], made["before"][2], more[5], made["missing"][0]],),
        )
        halves = dict(
            conn.execute(
                "SELECT hashtext(entity_key) & 1, count(DISTINCT entity_key) FROM braze_sync.change_log "
                "WHERE account_id = 'acct-1' GROUP BY 1"
            ).fetchall()
        )
    assert set(halves) == {0, 1}  # keys on both sides of the split
    settle(db, "acct-1")

    ranges, after = [], Position.start()
    with db.connection() as conn:
        whole = next_range(conn, entities=EVENTS.captured, account_id="acct-1", after=after, limit=1000)
        while rng := next_range(conn, entities=EVENTS.captured, account_id="acct-1", after=after, limit=13):
            ranges.append(rng)
            after = rng.upto
    assert whole.rows == 84

    for rng in [whole, *ranges]:
        one = EVENTS.extract(db.url, "acct-1", rng, readers=1)
        two = EVENTS.extract(db.url, "acct-1", rng, readers=2)
        assert two.schema == one.schema == pl.Schema(COLUMNS)
        assert two.equals(one)  # same rows, same order, same values
        assert one["key"].to_list() == [k for k, _ in _first_ranks(_log(db, "acct-1", rng))]

    # each key's log rows are all read by one of the two readers
    parts = read_parts(db.url, EVENTS.extract_sql, account_id="acct-1", log_range=whole, parts=[1, 0])
    assert all(p.height for p in parts)
    keys = [set(p["key"]) for p in parts]
    assert not keys[0] & keys[1]
    assert sum(p.height for p in parts) == whole.rows
    assert sum(p["key"].is_in([more[5]]).sum() for p in parts) == 3


def test_first_per_key_keeps_the_first_row_of_each_key_in_change_order() -> None:
    rows = pl.DataFrame(
        {
            "key": ["b", "a", "c", "a", "b"],
            "log_txid": [7, 5, 7, 5, 9],
            "log_id": [3, 9, 1, 2, 0],
            "value": ["b1", "a1", "c1", "a2", "b2"],
        }
    )
    # change order: (5, 2) a, (5, 9) a, (7, 1) c, (7, 3) b, (9, 0) b
    out = first_per_key(rows)
    assert out.columns == ["key", "log_ord", "value"]
    assert out.rows() == [("a", 1, "a2"), ("c", 3, "c1"), ("b", 4, "b1")]
    assert out.schema["log_ord"] == pl.Int64
