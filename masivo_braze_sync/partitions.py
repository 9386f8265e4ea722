"""Partitions: more than one process for one account's entity (docs/change-capture.md#partitions).

The capture triggers stamp each change-log row with a bucket computed from its customer (its
order, for purchases; migration 0008). An account's entity with `count` partitions has one consumer
per partition: partition `index` reads the rows whose bucket is `index` modulo `count`, with its
own cursor, batches, caught-up horizon and sync lock, so exactly-once and a customer's order hold
per partition exactly as they hold for the whole log. With one partition (the default) the
consumer is the entity's name and nothing differs from an unpartitioned sync.

The count changes only at a barrier (`change_count`): under the sync lock of every current
partition, with no batch open, when every partition has delivered everything up to the furthest
cursor among them. Each new partition then starts from that cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from masivo_braze_sync.capture import WHOLE, Position, Slice, read_cursor, slice_sql, try_lock, write_cursor
from masivo_braze_sync.db.engine import Database, connect
from masivo_braze_sync.errors import ConfigurationError, SyncError

#: buckets a row's partition key hashes to (migration 0008 states it again, as history):
#: the most partitions an entity can have
BUCKETS = 1024
#: the change-log tables whose rows carry a bucket (0008): an entity that reads only these can be partitioned
BUCKETED = frozenset({"customers", "events", "orders", "order_items"})
#: between the entity and the partition in a consumer's name: `events#0of2`
SEPARATOR = "#"


@dataclass(frozen=True)
class Partition:
    """Partition `index` of `count` of an entity (for one account)."""

    entity: str
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigurationError(
                f"{self.entity} has {self.count} partition(s): the partition must be 0 to {self.count - 1}"
            )

    @property
    def consumer(self) -> str:
        """The consumer's name: the entity's when it is the only partition, else `<entity>#<index>of<count>`."""
        if self.count == 1:
            return self.entity
        return f"{self.entity}{SEPARATOR}{self.index}of{self.count}"

    @property
    def slice(self) -> Slice:
        """The rows of the log this partition reads."""
        return Slice(self.index, self.count) if self.count > 1 else WHOLE


def entity_of(consumer: str) -> str:
    """The entity a consumer name belongs to (`events#0of2` → `events`)."""
    return consumer.split(SEPARATOR, 1)[0]


def all_of(entity: str, count: int) -> list[Partition]:
    """Every partition of an entity with `count` partitions."""
    return [Partition(entity, i, count) for i in range(count)]


def counts(conn: psycopg.Connection, entity: str, account_ids: Iterable[str]) -> dict[str, int]:
    """How many partitions the entity has for each account (1 when none were set)."""
    ids = list(account_ids)
    found = dict(
        conn.execute(
            "SELECT account_id, count FROM braze_sync.partitions WHERE entity = %s AND account_id = ANY(%s)",
            (entity, ids),
        ).fetchall()
    )
    return {a: int(found.get(a, 1)) for a in ids}


def count(conn: psycopg.Connection, entity: str, account_id: str) -> int:
    """How many partitions the entity has for the account (1 when none were set)."""
    return counts(conn, entity, [account_id])[account_id]


def partitions_of(conn: psycopg.Connection, entity: str, account_id: str) -> list[Partition]:
    """The account's current partitions of the entity."""
    return all_of(entity, count(conn, entity, account_id))


def check_partitionable(entity: str, captured: tuple[str, ...]) -> None:
    """Raise ConfigurationError when the entity reads log rows without a bucket."""
    unbucketed = sorted(set(captured) - BUCKETED)
    if unbucketed:
        raise ConfigurationError(
            f"{entity} cannot be partitioned: its changes ({', '.join(unbucketed)}) carry no customer bucket"
        )


class PartitionsBusy(SyncError):
    """The partition count cannot change now (a run holds a partition, or changes wait); try again later."""


class PartitionsLag(PartitionsBusy):
    """Some partitions have changes to send up to `start`, the furthest cursor among them: each must
    send them (and only them: `AccountRun(upto=start)`) before the count can change."""

    def __init__(self, message: str, start: Position, lagging: list[Partition]) -> None:
        super().__init__(message)
        self.start = start
        self.lagging = lagging


@dataclass(frozen=True)
class Change:
    """What `change_count` did: the old and new counts and where the new partitions start."""

    entity: str
    account_id: str
    before: int
    after: int
    start: Position


def change_count(db: Database, entity: str, captured: tuple[str, ...], account_id: str, new: int) -> Change:
    """Set how many partitions the entity has for the account, at a barrier.

    Under the sync lock of every current partition (no run of any of them can start or be going),
    with no open batch, every partition must have delivered all its rows up to `start`, the
    furthest cursor among them. Then every row at or before `start` was delivered exactly once and
    none after it was delivered by anyone, so each new partition starts at `start` and, since the
    new slices split the rows after it, each is delivered once. A new partition is caught up to the
    lowest horizon the old ones were caught up to (when each was). The old consumers' cursors and
    horizons are left as they were: a run still bound by them (started before the change) only
    waits. Raises PartitionsBusy when the barrier does not hold (run the lagging partitions first).
    """
    if new != 1:
        check_partitionable(entity, captured)
    if not 1 <= new <= BUCKETS:
        raise ConfigurationError(f"partitions of {entity}: the count must be 1 to {BUCKETS}")
    lock_conn = connect(db.url, autocommit=True)
    try:
        with db.connection() as conn:
            old = partitions_of(conn, entity, account_id)
        if old[0].count == new:  # nothing to change: no barrier needed
            return Change(entity, account_id, new, new, Position.start())
        for part in old:
            if not try_lock(lock_conn, part.consumer, account_id):
                raise PartitionsBusy(
                    f"account {account_id}: a {part.consumer} sync is running; change the partitions when it ends"
                )
        with db.connection() as conn:
            return _at_barrier(conn, entity, captured, account_id, old, new)
    finally:
        try:
            lock_conn.execute("SELECT pg_advisory_unlock_all()")
        finally:
            lock_conn.close()


def _at_barrier(
    conn: psycopg.Connection, entity: str, captured: tuple[str, ...], account_id: str, old: list[Partition], new: int
) -> Change:
    # the count read before the locks were taken: another change may have committed in between
    if count(conn, entity, account_id) != old[0].count:
        raise PartitionsBusy(f"account {account_id}: the partitions of {entity} changed meanwhile; run it again")
    consumers = [p.consumer for p in old]
    interrupted = {
        consumer
        for (consumer,) in conn.execute(
            "SELECT consumer FROM braze_sync.batches WHERE account_id = %s AND consumer = ANY(%s) AND status = 'open'",
            (account_id, consumers),
        ).fetchall()
    }
    cursors = {p: read_cursor(conn, consumer=p.consumer, account_id=account_id) for p in old}
    start = max(cursors.values())
    lagging: dict[Partition, str] = {p: "an interrupted batch" for p in old if p.consumer in interrupted}
    for part, cursor in cursors.items():
        # rows at or before `start` all belong to transactions that had ended when `start` was
        # read as a cursor (it is below the horizon of that read): none can still appear
        (waiting,) = conn.execute(
            f"""
            SELECT count(*) FROM braze_sync.change_log
            WHERE entity = ANY(%(entities)s) AND account_id = %(account_id)s
              AND {slice_sql("bucket", "%(slice_count)s", "%(slice_index)s")}
              AND (txid, id) > (%(c_txid)s::text::xid8, %(c_id)s)
              AND (txid, id) <= (%(s_txid)s::text::xid8, %(s_id)s)
            """,
            {
                "entities": list(captured),
                "account_id": account_id,
                "c_txid": str(cursor.txid),
                "c_id": cursor.log_id,
                "s_txid": str(start.txid),
                "s_id": start.log_id,
                **part.slice.params(),
            },
        ).fetchone()
        if waiting and part not in lagging:
            lagging[part] = f"{waiting} change(s) to send before the others' position"
    if lagging:
        part, why = next(iter(lagging.items()))
        raise PartitionsLag(f"account {account_id}: {part.consumer} has {why}", start, list(lagging))
    horizons = [
        row[0]
        for row in conn.execute(
            "SELECT horizon::text FROM braze_sync.caught_up WHERE account_id = %s AND consumer = ANY(%s)",
            (account_id, consumers),
        ).fetchall()
    ]
    caught_up = min(int(h) for h in horizons) if len(horizons) == len(old) else None
    fresh = all_of(entity, new)
    names = [p.consumer for p in fresh]
    # a name used before (this count was set once already) must not keep a stale horizon
    conn.execute("DELETE FROM braze_sync.caught_up WHERE account_id = %s AND consumer = ANY(%s)", (account_id, names))
    for part in fresh:
        write_cursor(conn, consumer=part.consumer, account_id=account_id, position=start)
        if caught_up is not None:
            conn.execute(
                "INSERT INTO braze_sync.caught_up (consumer, account_id, horizon) VALUES (%s, %s, %s::text::xid8)",
                (part.consumer, account_id, str(caught_up)),
            )
    if new == 1:  # no row: one partition, exactly as before partitions existed
        conn.execute("DELETE FROM braze_sync.partitions WHERE entity = %s AND account_id = %s", (entity, account_id))
    else:
        conn.execute(
            """
            INSERT INTO braze_sync.partitions (entity, account_id, count) VALUES (%s, %s, %s)
            ON CONFLICT (entity, account_id) DO UPDATE SET count = EXCLUDED.count, updated_at = now()
            """,
            (entity, account_id, new),
        )
    return Change(entity, account_id, old[0].count, new, start)
