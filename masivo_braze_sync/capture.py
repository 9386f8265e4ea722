"""Change capture: read the trigger-fed change log in commit-safe order.

Triggers (migration 0001) append one `braze_sync.change_log` row per changed source row, stamped
with the writing transaction's id (`txid xid8`). A consumer remembers a position `(txid, id)` and
reads forward, but only rows whose transaction is below `pg_snapshot_xmin(pg_current_snapshot())`:
every transaction below that horizon has finished, so nothing can ever appear behind a position
taken from below it, however long a writer held its transaction open
(docs/change-capture.md#the-change-log-and-the-horizon).
The horizon is taken in the same statement as the read: READ COMMITTED gives each statement its
own snapshot, and a horizon from an earlier statement could be stale.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, order=True)
class Position:
    """A point in the change log: a transaction id and a log id within it."""

    txid: int
    log_id: int

    @classmethod
    def start(cls) -> Position:
        """Before the first change."""
        return cls(0, 0)


@dataclass(frozen=True)
class Slice:
    """Which log rows of its entities a consumer takes: those whose `bucket` is `index` modulo `count`.

    The whole log is `Slice()` (count 1). A partition of an account's entity is one slice
    (`partitions.Partition`); the triggers stamp each row's bucket from its customer, once, so the
    slices of one count split the log into disjoint, fixed sets (docs/change-capture.md#partitions).
    Rows written before the bucket existed (NULL) count as bucket 0.
    """

    index: int = 0
    count: int = 1

    def sql(self, alias: str = "", *, count: str = "%(slice_count)s", index: str = "%(slice_index)s") -> str:
        """The SQL condition (parameters named `slice_count` and `slice_index` unless told)."""
        return slice_sql(f"{alias}bucket", count, index)

    def params(self) -> dict[str, int]:
        """The parameters of `sql()`."""
        return {"slice_count": self.count, "slice_index": self.index}


#: every row of the consumer's entities
WHOLE = Slice()


def slice_sql(bucket: str, count: str, index: str) -> str:
    """The one condition that puts a log row in a slice: its bucket (NULL counts as 0) modulo the count.

    With one partition the test is `count = 1`, known when a statement with parameters is planned,
    so the planner drops it: an `=` on an expression would be assumed to keep 0.5% of the rows.
    """
    return f"({count}::int = 1 OR mod(coalesce({bucket}, 0::smallint), {count}::int) = {index}::int)"


@dataclass(frozen=True)
class LogRange:
    """The half-open range `(after, upto]` of one consumer's log rows for one account."""

    after: Position
    upto: Position
    rows: int
    #: the consumer's share of the log (a partition's slice; the whole log by default)
    slice: Slice = WHOLE


#: the channel the change log's trigger notifies (migration 0005; docs/live.md#wake-ups)
NOTIFY_CHANNEL = "masivo_braze_sync"


@dataclass(frozen=True)
class Read:
    """One read of the log: the range found (None = nothing readable) and the horizon it used.

    Everything of the consumer after the cursor and below `horizon` is in `range` unless the read
    was `full` (it stopped at the row limit): a read that is not full has caught up to `horizon`.
    """

    range: LogRange | None
    horizon: int
    full: bool

    @property
    def caught_up(self) -> bool:
        """Whether nothing of the consumer below `horizon` is left after this read's range."""
        return not self.full


@dataclass(frozen=True)
class Bound:
    """Other consumers of the account whose delivered changes a read must not overtake.

    One consumer, or every partition of one (`parts`): the read then stays below the lowest of
    their horizons, exactly as if they were one consumer (docs/change-capture.md#partitions).
    """

    #: (consumer, its slice) of each bound consumer
    parts: tuple[tuple[str, Slice], ...]
    #: the change-log entities those consumers read
    entities: tuple[str, ...]


# The bound is where the bound consumers stand *now*: one that has nothing readable left (no open
# batch, no change of its slice after its cursor below the horizon) has delivered everything below
# the horizon and bounds at the horizon itself; otherwise at the horizon it last caught up to
# (NULL when it never did: `min` and `least` ignore it, so a consumer that never ran holds nobody
# back). With no bound consumers `min` is NULL: no bound.
NEXT_RANGE_SQL = f"""
WITH snap AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
bound AS (
    SELECT min(CASE
        WHEN NOT EXISTS (SELECT 1 FROM braze_sync.batches b
                         WHERE b.consumer = p.consumer AND b.account_id = %(account_id)s AND b.status = 'open')
         AND NOT EXISTS (SELECT 1 FROM braze_sync.change_log l
                         WHERE l.entity = ANY(%(bound_entities)s) AND l.account_id = %(account_id)s
                           AND {slice_sql("l.bucket", "p.parts", "p.part")}
                           AND (l.txid, l.id) > coalesce(
                               (SELECT (c.txid, c.log_id) FROM braze_sync.cursors c
                                WHERE c.consumer = p.consumer AND c.account_id = %(account_id)s),
                               ('0'::xid8, 0::bigint))
                           AND l.txid < (SELECT xmin FROM snap))
        THEN (SELECT xmin FROM snap)
        ELSE (SELECT horizon FROM braze_sync.caught_up WHERE consumer = p.consumer AND account_id = %(account_id)s)
    END) AS horizon
    FROM unnest(%(bound)s::text[], %(bound_part)s::int[], %(bound_parts)s::int[]) AS p(consumer, part, parts)
),
upto AS (SELECT least((SELECT xmin FROM snap), (SELECT horizon FROM bound)) AS horizon),
taken AS (
    SELECT txid, id
    FROM braze_sync.change_log
    WHERE entity = ANY(%(entities)s) AND account_id = %(account_id)s
      AND {slice_sql("bucket", "%(slice_count)s", "%(slice_index)s")}
      AND (txid, id) > (%(txid)s::text::xid8, %(log_id)s)
      AND txid < (SELECT horizon FROM upto)
      AND (%(cap_txid)s::text IS NULL OR (txid, id) <= (%(cap_txid)s::text::xid8, %(cap_id)s::bigint))
    ORDER BY txid, id
    LIMIT %(limit)s
)
SELECT count(*), max(txid::text::numeric)::text,
       (SELECT id FROM taken ORDER BY txid DESC, id DESC LIMIT 1),
       (SELECT horizon FROM upto)::text
FROM taken
"""


def read_next(
    conn: psycopg.Connection,
    *,
    entities: tuple[str, ...],
    account_id: str,
    after: Position,
    limit: int,
    bound_by: Bound | None = None,
    part: Slice = WHOLE,
    cap: Position | None = None,
) -> Read:
    """The next at most `limit` committed changes after `after`, with the horizon the read used.

    `bound_by` names another consumer of the account whose delivered changes the read must not
    overtake: the read stays below the horizon that consumer has caught up to (the current horizon
    when it has nothing readable left; docs/live.md#profile-before-event). The snapshot, the bound
    and the rows come from one statement, so they agree. `part` is the consumer's slice of the log;
    `cap`, when given, the last position the read may reach (a read that stopped there has not
    necessarily caught up to the horizon: it counts as full).
    """
    parts = bound_by.parts if bound_by else ()
    count, txid, log_id, horizon = conn.execute(
        NEXT_RANGE_SQL,
        {
            "entities": list(entities),
            "account_id": account_id,
            "txid": str(after.txid),
            "log_id": after.log_id,
            "limit": limit,
            "bound": [c for c, _ in parts],
            "bound_part": [s.index for _, s in parts],
            "bound_parts": [s.count for _, s in parts],
            "bound_entities": list(bound_by.entities) if bound_by else [],
            **part.params(),
            "cap_txid": None if cap is None else str(cap.txid),
            "cap_id": None if cap is None else cap.log_id,
        },
    ).fetchone()
    rng = LogRange(after, Position(int(txid), int(log_id)), int(count), part) if count else None
    return Read(range=rng, horizon=int(horizon), full=count >= limit or cap is not None)


def next_range(
    conn: psycopg.Connection, *, entities: tuple[str, ...], account_id: str, after: Position, limit: int
) -> LogRange | None:
    """The next at most `limit` committed changes after `after`, or None when there are none yet."""
    return read_next(conn, entities=entities, account_id=account_id, after=after, limit=limit).range


def record_caught_up(conn: psycopg.Connection, *, consumer: str, account_id: str, horizon: int) -> None:
    """Note that `consumer` has nothing left below `horizon` for the account (never moves back).

    Call it in the transaction that commits the batch of a read that was not full, or on its own
    after a read that found nothing: either way everything below `horizon` is then delivered.
    """
    conn.execute(
        """
        INSERT INTO braze_sync.caught_up (consumer, account_id, horizon, updated_at)
        VALUES (%s, %s, %s::text::xid8, now())
        ON CONFLICT (consumer, account_id)
        DO UPDATE SET horizon = greatest(braze_sync.caught_up.horizon, EXCLUDED.horizon), updated_at = now()
        """,
        (consumer, account_id, str(horizon)),
    )


def position_at(
    conn: psycopg.Connection,
    *,
    entities: tuple[str, ...],
    account_id: str,
    after: Position,
    n: int,
    part: Slice = WHOLE,
) -> Position:
    """The position of the `n`-th log row (1-based, change order) of `part` after `after`.

    Used to end a batch early: `LogRange(after, position_at(..., n), n)` is the range's first `n`
    rows. The rows are below the horizon already (they were in a range), so no horizon is needed.
    """
    row = conn.execute(
        f"""
        SELECT txid::text, id FROM braze_sync.change_log
        WHERE entity = ANY(%(entities)s) AND account_id = %(account_id)s AND {part.sql()}
          AND (txid, id) > (%(txid)s::text::xid8, %(log_id)s)
        ORDER BY txid, id OFFSET %(skip)s LIMIT 1
        """,
        {
            "entities": list(entities),
            "account_id": account_id,
            "txid": str(after.txid),
            "log_id": after.log_id,
            "skip": n - 1,
            **part.params(),
        },
    ).fetchone()
    if row is None:
        raise LookupError(f"account {account_id}: fewer than {n} log rows after the cursor")
    return Position(int(row[0]), int(row[1]))


def read_cursor(conn: psycopg.Connection, *, consumer: str, account_id: str) -> Position:
    """Where `consumer` has delivered up to for the account (the start when it never ran)."""
    row = conn.execute(
        "SELECT txid::text, log_id FROM braze_sync.cursors WHERE consumer = %s AND account_id = %s",
        (consumer, account_id),
    ).fetchone()
    return Position(int(row[0]), int(row[1])) if row else Position.start()


def write_cursor(conn: psycopg.Connection, *, consumer: str, account_id: str, position: Position) -> None:
    """Move the consumer's cursor (call inside the transaction that commits the batch)."""
    conn.execute(
        """
        INSERT INTO braze_sync.cursors (consumer, account_id, txid, log_id, updated_at)
        VALUES (%s, %s, %s::text::xid8, %s, now())
        ON CONFLICT (consumer, account_id)
        DO UPDATE SET txid = EXCLUDED.txid, log_id = EXCLUDED.log_id, updated_at = now()
        """,
        (consumer, account_id, str(position.txid), position.log_id),
    )


def backlog(
    conn: psycopg.Connection, *, entities: tuple[str, ...], account_id: str, after: Position, part: Slice = WHOLE
) -> int:
    """How many changes of `part` (committed or not yet visible to the horizon) wait after `after`."""
    return conn.execute(
        f"""
        SELECT count(*) FROM braze_sync.change_log
        WHERE entity = ANY(%(entities)s) AND account_id = %(account_id)s AND {part.sql()}
          AND (txid, id) > (%(txid)s::text::xid8, %(log_id)s)
        """,
        {"entities": list(entities), "account_id": account_id, "txid": str(after.txid), "log_id": after.log_id}
        | part.params(),
    ).fetchone()[0]


@dataclass(frozen=True)
class Backlog:
    """What waits for one consumer of one account: changes after its cursor, and the oldest's age."""

    rows: int
    #: age of the oldest unsent change, in seconds: how far Braze lags behind Masivo
    lag_seconds: float


#: a consumer of one account: (account id, consumer name, its slice)
Reader = tuple[str, str, Slice]

# One statement, two parts. Readers of the whole log that share one consumer name (every account
# with one partition: the usual case) are counted as before partitions existed: one grouped scan
# joined to their cursors. Partition readers are counted each from its cursor on the index
# (entity, account_id, txid, id), keeping the rows of its slice; a part with no readers reads nothing.
BACKLOGS_SQL = f"""
SELECT pg_snapshot_xmin(pg_current_snapshot())::text,
       coalesce((
           SELECT json_agg(json_build_array(account_id, n, age)) FROM (
               SELECT account_id, sum(n) AS n, max(age) AS age FROM (
                   SELECT l.account_id, count(*) AS n, extract(epoch FROM now() - min(l.created_at)) AS age
                   FROM braze_sync.change_log l
                   LEFT JOIN braze_sync.cursors c ON c.consumer = %(consumer)s AND c.account_id = l.account_id
                   WHERE cardinality(%(accounts)s::text[]) > 0
                     AND l.entity = ANY(%(entities)s) AND l.account_id = ANY(%(accounts)s)
                     AND (c.account_id IS NULL OR (l.txid, l.id) > (c.txid, c.log_id))
                   GROUP BY l.account_id
                   UNION ALL
                   SELECT p.account_id, w.n, extract(epoch FROM now() - w.oldest)
                   FROM unnest(%(p_accounts)s::text[], %(p_consumers)s::text[], %(p_part)s::int[], %(p_parts)s::int[])
                        AS p(account_id, consumer, part, parts)
                   LEFT JOIN braze_sync.cursors c ON c.consumer = p.consumer AND c.account_id = p.account_id
                   CROSS JOIN LATERAL (
                       SELECT count(*) AS n, min(l.created_at) AS oldest
                       FROM braze_sync.change_log l
                       WHERE l.entity = ANY(%(entities)s) AND l.account_id = p.account_id
                         AND (l.txid, l.id) > (coalesce(c.txid, '0'::xid8), coalesce(c.log_id, 0))
                         AND {slice_sql("l.bucket", "p.parts", "p.part")}
                   ) w
                   WHERE w.n > 0
               ) u
               GROUP BY account_id
           ) g
       ), '[]')
"""


def scan_backlogs(
    conn: psycopg.Connection, *, entities: tuple[str, ...], readers: list[Reader]
) -> tuple[dict[str, Backlog], int]:
    """Every listed account's backlog in one statement, and that statement's horizon.

    `readers` are the consumers of the entity, one per account or one per partition of an
    account: an account's backlog is what waits after each one's cursor in its slice, summed.
    Accounts with no backlog are left out. Changes not yet visible to the horizon count too: they
    are work, only not readable yet. An interrupted batch's rows are after the cursor, so an account
    with an open batch has a backlog. An account left out had nothing below the horizon (every
    transaction below it had ended when the statement counted): what a read finding nothing shows.
    """
    whole_names = {c for _, c, s in readers if s == WHOLE}
    consumer = next(iter(whole_names)) if len(whole_names) == 1 else None
    whole = [a for a, c, s in readers if s == WHOLE and c == consumer]
    parts = [(a, c, s) for a, c, s in readers if not (s == WHOLE and c == consumer)]
    horizon, found = conn.execute(
        BACKLOGS_SQL,
        {
            "entities": list(entities),
            "consumer": consumer,
            "accounts": whole,
            "p_accounts": [a for a, _, _ in parts],
            "p_consumers": [c for _, c, _ in parts],
            "p_part": [s.index for _, _, s in parts],
            "p_parts": [s.count for _, _, s in parts],
        },
    ).fetchone()
    return {account: Backlog(int(n), float(age or 0)) for account, n, age in found}, int(horizon)


def horizon_age_seconds(conn: psycopg.Connection) -> float:
    """Age of the oldest open transaction in the cluster: how long changes may be held back."""
    age = conn.execute(
        "SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0) FROM pg_stat_activity "
        "WHERE backend_xid IS NOT NULL OR backend_xmin IS NOT NULL"
    ).fetchone()[0]
    return float(age or 0)


PRUNE_SQL = """
DELETE FROM braze_sync.change_log l
WHERE l.entity = %(entity)s AND l.account_id = %(account_id)s
  AND (l.txid, l.id) <= (%(txid)s::text::xid8, %(log_id)s)
"""


def prune(conn: psycopg.Connection, *, account_id: str, readers: dict[str, tuple[str, ...]]) -> int:
    """Delete log rows every consumer that reads them has committed past (docs/change-capture.md#pruning).

    `readers` maps consumer name → the log entities it reads. An entity's rows go only below the
    lowest cursor of all its readers; a reader that never ran for the account keeps them all.
    Open batches start at their consumer's cursor, so their rows are always kept.
    """
    by_entity: dict[str, list[str]] = {}
    for consumer, entities in readers.items():
        for entity in entities:
            by_entity.setdefault(entity, []).append(consumer)
    deleted = 0
    for entity, consumers in by_entity.items():
        lowest = min(read_cursor(conn, consumer=c, account_id=account_id) for c in consumers)
        if lowest == Position.start():
            continue
        deleted += conn.execute(
            PRUNE_SQL, {"entity": entity, "account_id": account_id, "txid": str(lowest.txid), "log_id": lowest.log_id}
        ).rowcount
    return deleted


SKIP_SQL = f"""
WITH skipped AS (
    SELECT txid, id FROM braze_sync.change_log
    WHERE entity = ANY(%(entities)s) AND account_id = %(account_id)s
      AND {slice_sql("bucket", "%(slice_count)s", "%(slice_index)s")}
      AND (txid, id) > (%(txid)s::text::xid8, %(log_id)s)
      AND txid < pg_snapshot_xmin(pg_current_snapshot())
)
SELECT count(*),
       (SELECT txid::text FROM skipped ORDER BY txid DESC, id DESC LIMIT 1),
       (SELECT id FROM skipped ORDER BY txid DESC, id DESC LIMIT 1)
FROM skipped
"""


@dataclass(frozen=True)
class SwitchedOff:
    """A switched-off consumer of an account: what it reads and the name its drops are recorded under."""

    entities: tuple[str, ...]
    #: its slice of the log (a partition's; the whole log by default)
    part: Slice = WHOLE
    #: the name of the run summary that records the drop (the entity's, for every partition)
    recorded_as: str | None = None


def skip_switched_off(conn: psycopg.Connection, *, account_id: str, readers: dict[str, SwitchedOff]) -> dict[str, int]:
    """Move the cursors of consumers switched off for the account past their committed changes.

    The rule (docs/change-capture.md#switched-off-entities): a switched-off entity sends nothing,
    and what changed while it was off is dropped, not kept for later, so switching it on again never
    sends months-old changes (`sync --full` re-sends the current state on purpose). Each drop is
    recorded as a run summary with status `off`, its count in `skipped` (`masivo-braze status`).
    A consumer with an open batch (a run interrupted before it was switched off) keeps its place:
    the ledger resumes that batch when it is switched on again. So does a consumer whose sync lock
    another session holds (a run still going, or a partition change): its cursor is that session's.
    `readers` maps each switched-off consumer to what it reads; returns how many changes each one
    dropped.
    """
    dropped: dict[str, int] = {}
    for consumer, reader in readers.items():
        if not try_xact_lock(conn, consumer, account_id):
            continue
        if conn.execute(
            "SELECT 1 FROM braze_sync.batches WHERE consumer = %s AND account_id = %s AND status = 'open'",
            (consumer, account_id),
        ).fetchone():
            continue
        after = read_cursor(conn, consumer=consumer, account_id=account_id)
        count, txid, log_id = conn.execute(
            SKIP_SQL,
            {
                "entities": list(reader.entities),
                "account_id": account_id,
                "txid": str(after.txid),
                "log_id": after.log_id,
                **reader.part.params(),
            },
        ).fetchone()
        if not count:
            continue
        write_cursor(conn, consumer=consumer, account_id=account_id, position=Position(int(txid), int(log_id)))
        conn.execute(
            "INSERT INTO braze_sync.run_summaries (consumer, account_id, status, skipped, finished_at) "
            "VALUES (%s, %s, 'off', %s, now())",
            (reader.recorded_as or consumer, account_id, count),
        )
        dropped[consumer] = int(count)
    return dropped


#: the advisory lock's key of one consumer's sync of one account: one run at a time
LOCK_SQL = "hashtext('masivo_braze_sync'), hashtext(%s)"


def lock_key(consumer: str, account_id: str) -> str:
    """The text behind a consumer's sync lock for an account (`LOCK_SQL`'s parameter)."""
    return f"{consumer}/{account_id}"


def try_lock(conn: psycopg.Connection, consumer: str, account_id: str) -> bool:
    """Take the session-level lock that lets one run at a time sync a consumer for an account."""
    return bool(
        conn.execute(f"SELECT pg_try_advisory_lock({LOCK_SQL})", (lock_key(consumer, account_id),)).fetchone()[0]
    )


def try_xact_lock(conn: psycopg.Connection, consumer: str, account_id: str) -> bool:
    """The same lock for the rest of the current transaction (no run of the consumer can hold it meanwhile)."""
    return bool(
        conn.execute(f"SELECT pg_try_advisory_xact_lock({LOCK_SQL})", (lock_key(consumer, account_id),)).fetchone()[0]
    )
