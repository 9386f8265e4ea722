"""Batches, the delivery ledger and the commit: what makes delivery at-least-once with a small,
measured duplicate window.

A batch is a fixed range of one consumer's change log for one account. Its requests are written
to `braze_sync.deliveries` (status `pending`) before anything is sent, marked `sending` in small
blocks just before they go out, and `delivered` / `rejected` as answers arrive. The cursor moves
to the batch's end only when every request has a final answer (`commit`). After a crash the open
batch is taken up again: keys already delivered are not sent again, keys whose request was
`sending` are sent again and counted as possible duplicates (Braze has no idempotency key,
docs/braze.md#request-and-response-format), and keys never sent are simply sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import polars as pl
import psycopg

from masivo_braze_sync.capture import (
    WHOLE,
    Bound,
    LogRange,
    Position,
    Slice,
    position_at,
    read_cursor,
    read_next,
    record_caught_up,
    try_lock,
    write_cursor,
)
from masivo_braze_sync.db.engine import Database


@dataclass(frozen=True)
class BatchRef:
    """A batch as tasks see it: ids and a range, nothing else (safe as a Prefect parameter)."""

    id: int | None  # None in a dry run: nothing is written
    consumer: str
    account_id: str
    range: LogRange
    resumed: bool = False
    #: the horizon the consumer has caught up to once this batch commits (its read was not full
    #: and the consumer's catch-up is tracked); None otherwise
    caught_up_to: int | None = None


@dataclass
class ResumeState:
    """What an earlier, interrupted attempt at a batch left behind."""

    done_keys: set[str] = field(default_factory=set)  # delivered or rejected by Braze: never resend
    unknown_keys: set[str] = field(default_factory=set)  # sent, answer unknown: resend, count


@dataclass(frozen=True)
class DeliveryOutcome:
    """The final answer for one ledger row."""

    delivery_id: int
    status: str  # delivered | rejected | refused (401/403: not applied) | unsent (never left)
    http_status: int | None
    attempts: int
    possibly_duplicated: bool


class Ledger:
    """Ledger operations for one consumer and account. Each call uses its own short transaction.

    The consumer owns the cursor, the batches and the caught-up horizon; with partitions it is one
    partition of an entity (`partitions.Partition.consumer`), reading its `part` of the log. The
    requests and rejected rows are recorded under `sender`, the entity, whichever partition sent
    them: "what went to Braze for this entity" is one question (`sync --full`, `rejected`).
    """

    def __init__(
        self,
        db: Database,
        consumer: str,
        account_id: str,
        *,
        bound_by: Bound | None = None,
        tracks_catch_up: bool = False,
        part: Slice = WHOLE,
        sender: str | None = None,
        cap: Position | None = None,
    ) -> None:
        self.db = db
        self.consumer = consumer
        self.account_id = account_id
        #: the consumer's slice of the log (docs/change-capture.md#partitions)
        self.part = part
        #: the name requests and rejected rows are recorded under (the entity's)
        self.sender = sender or consumer
        #: the last position batches may reach (a partition change's barrier), None: no limit
        self.cap = cap
        #: another consumer whose caught-up horizon this one never reads past (docs/live.md#profile-before-event)
        self.bound_by = bound_by
        #: whether to record the horizon this consumer has caught up to (others are bound by it)
        self.tracks_catch_up = tracks_catch_up

    def next_batch(self, entities: tuple[str, ...], batch_rows: int) -> BatchRef | None:
        """The open batch of an interrupted run, else a new one after the cursor, else None."""
        with self.db.connection() as conn:
            row = conn.execute(
                """
                UPDATE braze_sync.batches SET attempts = attempts + 1
                WHERE consumer = %s AND account_id = %s AND status = 'open'
                RETURNING id, from_txid::text, from_id, to_txid::text, to_id, log_rows
                """,
                (self.consumer, self.account_id),
            ).fetchone()
            if row:
                rng = LogRange(Position(int(row[1]), row[2]), Position(int(row[3]), row[4]), row[5], self.part)
                return BatchRef(row[0], self.consumer, self.account_id, rng, resumed=True)
            after = read_cursor(conn, consumer=self.consumer, account_id=self.account_id)
            read = read_next(
                conn,
                entities=entities,
                account_id=self.account_id,
                after=after,
                limit=batch_rows,
                bound_by=self.bound_by,
                part=self.part,
                cap=self.cap,
            )
            rng = read.range
            if rng is None:
                if self.tracks_catch_up and self.cap is None:  # nothing below the horizon: caught up to it
                    record_caught_up(conn, consumer=self.consumer, account_id=self.account_id, horizon=read.horizon)
                return None
            batch_id = conn.execute(
                """
                INSERT INTO braze_sync.batches (consumer, account_id, from_txid, from_id, to_txid, to_id, log_rows)
                VALUES (%s, %s, %s::text::xid8, %s, %s::text::xid8, %s, %s) RETURNING id
                """,
                (
                    self.consumer,
                    self.account_id,
                    str(rng.after.txid),
                    rng.after.log_id,
                    str(rng.upto.txid),
                    rng.upto.log_id,
                    rng.rows,
                ),
            ).fetchone()[0]
            caught_up_to = read.horizon if self.tracks_catch_up and read.caught_up else None
            return BatchRef(batch_id, self.consumer, self.account_id, rng, caught_up_to=caught_up_to)

    def shrink(self, batch: BatchRef, entities: tuple[str, ...], rows: int) -> BatchRef:
        """End a new batch after its first `rows` log rows (before any request is recorded).

        The rest of the range goes to the next batch. A dry run's batch is only recomputed.
        """
        if batch.resumed or not 0 < rows < batch.range.rows:
            raise ValueError(f"batch {batch.id}: cannot end after {rows} of its {batch.range.rows} log rows")
        with self.db.connection() as conn:
            upto = position_at(
                conn, entities=entities, account_id=self.account_id, after=batch.range.after, n=rows, part=self.part
            )
            if batch.id is not None:
                conn.execute(
                    "UPDATE braze_sync.batches SET to_txid = %s::text::xid8, to_id = %s, log_rows = %s "
                    "WHERE id = %s AND status = 'open'",
                    (str(upto.txid), upto.log_id, rows, batch.id),
                )
        # rows are left for the next batch: this one no longer reaches the horizon
        return replace(batch, range=LogRange(batch.range.after, upto, rows, batch.range.slice), caught_up_to=None)

    def take_over(self, batch_id: int) -> ResumeState:
        """Read what an interrupted attempt delivered, and retire its unfinished ledger rows."""
        state = ResumeState()
        with self.db.connection() as conn:
            for keys, status in conn.execute(
                "SELECT keys, status FROM braze_sync.deliveries WHERE batch_id = %s", (batch_id,)
            ):
                if status in ("delivered", "rejected"):
                    state.done_keys.update(keys)
                elif status in ("sending", "unknown"):
                    state.unknown_keys.update(keys)
            # superseded: the keys are planned again in new rows of this attempt. A request that
            # was sent may have landed (`unknown`); one never sent cannot have (`unsent`), nor
            # one Braze refused with 401/403 (`refused`): only `unknown` counts as a possible duplicate
            conn.execute(
                "UPDATE braze_sync.deliveries "
                "SET status = CASE status WHEN 'sending' THEN 'unknown' ELSE 'unsent' END "
                "WHERE batch_id = %s AND status IN ('pending', 'sending')",
                (batch_id,),
            )
        state.unknown_keys -= state.done_keys
        return state

    def add_requests(self, batch_id: int, plans: list, possibly_duplicated: list[bool]) -> list[int]:
        """Write one `pending` ledger row per planned request; returns their ids in plan order."""
        if not plans:
            return []
        with self.db.connection() as conn, conn.cursor() as cur:
            rows = [
                (batch_id, self.account_id, self.sender, p.seq, p.endpoint, p.keys, dup)
                for p, dup in zip(plans, possibly_duplicated, strict=True)
            ]
            cur.executemany(
                "INSERT INTO braze_sync.deliveries "
                "(batch_id, account_id, consumer, seq, endpoint, keys, possibly_duplicated) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                rows,
                returning=True,
            )
            ids = []
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
        return ids

    def mark_sending(self, delivery_ids: list[int]) -> None:
        """Mark requests as about to be sent: after a crash their outcome is unknown."""
        if delivery_ids:
            with self.db.connection() as conn:
                conn.execute("UPDATE braze_sync.deliveries SET status = 'sending' WHERE id = ANY(%s)", (delivery_ids,))

    def record_outcomes(self, outcomes: list[DeliveryOutcome], rejects: list[tuple[str, str]], batch_id: int) -> None:
        """Record final answers, and the objects Braze refused inside them, in one transaction."""
        if not outcomes and not rejects:
            return
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE braze_sync.deliveries SET status = %s, http_status = %s, attempts = %s, "
                "possibly_duplicated = possibly_duplicated OR %s, completed_at = now() WHERE id = %s",
                [(o.status, o.http_status, o.attempts, o.possibly_duplicated, o.delivery_id) for o in outcomes],
            )
            self._insert_rejects(cur, [(k, "braze", r) for k, r in rejects], batch_id)

    def _insert_rejects(self, cur: psycopg.Cursor, rows: list[tuple[str, str, str]], batch_id: int | None) -> None:
        if rows:
            cur.executemany(
                "INSERT INTO braze_sync.rejected_rows (account_id, consumer, entity_key, stage, reason, batch_id) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(self.account_id, self.sender, k, s, r, batch_id) for k, s, r in rows],
            )

    def commit(
        self, batch: BatchRef, rejected: pl.DataFrame, on_commit: Callable[[psycopg.Connection], None] | None = None
    ) -> None:
        """Move the cursor to the batch's end, close it and record its rejected rows, atomically.

        `on_commit(conn)` runs inside the same transaction (an entity's delivered-state update).
        """
        assert batch.id is not None
        with self.db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM braze_sync.batches WHERE id = %s AND status = 'open' FOR UPDATE", (batch.id,))
            if cur.fetchone() is None:  # committed by someone else: never move a cursor twice
                return
            # a resumed batch re-validates the same rows: keep one reject per key and stage
            cur.execute("DELETE FROM braze_sync.rejected_rows WHERE batch_id = %s AND stage <> 'braze'", (batch.id,))
            self._insert_rejects(cur, list(rejected.select("key", "stage", "reason").iter_rows()), batch.id)
            if on_commit is not None:
                on_commit(conn)
            write_cursor(conn, consumer=self.consumer, account_id=self.account_id, position=batch.range.upto)
            if batch.caught_up_to is not None:
                record_caught_up(conn, consumer=self.consumer, account_id=self.account_id, horizon=batch.caught_up_to)
            cur.execute(
                "UPDATE braze_sync.batches SET status = 'committed', committed_at = now() WHERE id = %s",
                (batch.id,),
            )


__all__ = ["BatchRef", "DeliveryOutcome", "Ledger", "ResumeState", "try_lock"]
