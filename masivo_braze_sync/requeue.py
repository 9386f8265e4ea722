"""Sending rows again on purpose: `sync --full` and `retry-rejected`.

Both work by appending rows to the change log, so what goes again takes the normal path (commit-
safe capture, validation, batching, pacing, the ledger) and nothing else learns a second way in.
"""

from __future__ import annotations

from dataclasses import dataclass

from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities.base import Entity


def full_resync(db: Database, entity: Entity, account_id: str, *, resend: bool = False) -> int:
    """Queue every current row of `entity` for the account; returns how many rows were queued."""
    with db.connection() as conn:
        return entity.full_resync(conn, account_id, resend=resend)


@dataclass(frozen=True)
class RejectedRow:
    """One row of `braze_sync.rejected_rows` (ids and reasons only)."""

    id: int
    account_id: str
    entity: str
    key: str
    stage: str
    reason: str
    created_at: object


def list_rejected(
    db: Database, *, account_ids: list[str] | None = None, entity: str | None = None, limit: int = 100
) -> tuple[list[RejectedRow], int]:
    """The newest rejected rows not retried yet (filtered), and how many there are in all."""
    where = (
        "retried_at IS NULL AND (%(a)s::text[] IS NULL OR account_id = ANY(%(a)s)) "
        "AND (%(e)s::text IS NULL OR consumer = %(e)s)"
    )
    params = {"a": account_ids or None, "e": entity, "n": limit}
    with db.connection() as conn:
        total = conn.execute(f"SELECT count(*) FROM braze_sync.rejected_rows WHERE {where}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT id, account_id, consumer, entity_key, stage, reason, created_at "
            f"FROM braze_sync.rejected_rows WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %(n)s",
            params,
        ).fetchall()
    return [RejectedRow(*r) for r in rows], total


def retry_rejected(
    db: Database, entities: dict[str, Entity], *, account_ids: list[str] | None = None, entity: str | None = None
) -> dict[tuple[str, str], int]:
    """Queue the rows behind rejected keys again and mark them retried; counts per (account, entity
    whose sync sends them).

    Run it after fixing the data (or the rule): the next sync reads those rows like any change. A
    row still invalid is rejected again, with its reason, as a new rejected row.
    """
    # only consumers whose rows can be queued are marked retried: the others stay listed
    senders = {c: e for e in entities.values() for c in (e.name, *e.retries_rejected_of)}
    done: dict[tuple[str, str], int] = {}
    with db.connection() as conn:
        rows = conn.execute(
            """
            UPDATE braze_sync.rejected_rows SET retried_at = now()
            WHERE retried_at IS NULL AND (%(a)s::text[] IS NULL OR account_id = ANY(%(a)s))
              AND (%(e)s::text IS NULL OR consumer = %(e)s) AND consumer = ANY(%(c)s)
            RETURNING account_id, consumer, entity_key
            """,
            {"a": account_ids or None, "e": entity, "c": list(senders)},
        ).fetchall()
        grouped: dict[tuple[str, str], set[str]] = {}
        for account_id, consumer, key in rows:
            grouped.setdefault((account_id, senders[consumer].name), set()).add(key)
        for (account_id, name), keys in sorted(grouped.items()):
            entries = sorted(set(entities[name].requeue_entries(sorted(keys))))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) VALUES (%s, %s, %s, 'R')",
                    [(account_id, e, k) for e, k in entries],
                )
            done[(account_id, name)] = len(keys)
    return done
