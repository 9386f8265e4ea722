"""What an operator asks first, per account and entity: backlog and lag (age of the oldest unsent
change), last success, last error, rejected rows by reason, changes dropped while switched off.
`masivo-braze status` prints it for every account; each account run's artifact shows it for its
own (`run_report.py`).

Counts, reasons and ids only: a reason names a field or Braze's error type, never a value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg

from masivo_braze_sync import partitions
from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.capture import scan_backlogs
from masivo_braze_sync.entities import CUSTOMERS, ENTITIES
from masivo_braze_sync.signals import PreviousRun

#: the most frequent reasons shown per account and entity
TOP_REASONS = 5


@dataclass
class AccountStatus:
    """Where one entity of one account stands."""

    account_id: str
    entity: str
    enabled: bool = True
    backlog: int = 0
    #: age in seconds of the oldest change not yet sent (0 when caught up)
    lag_seconds: float = 0.0
    last_success: datetime | None = None
    #: the error of the last run, when it failed after the last success
    last_error: str | None = None
    #: rejected rows not retried yet
    rejected: int = 0
    #: the most frequent reasons of those, with their counts
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    #: changes made while the entity was switched off for the account (`capture.skip_switched_off`)
    dropped_while_off: int = 0


def account_status(conn: psycopg.Connection, account_id: str, entity: str) -> AccountStatus:
    """The status of one entity of one account."""
    spec = ENTITIES[entity]
    # every partition's backlog, summed (docs/change-capture.md#partitions)
    readers = [(account_id, p.consumer, p.slice) for p in partitions.partitions_of(conn, entity, account_id)]
    waiting = scan_backlogs(conn, entities=spec.captured, readers=readers)[0].get(account_id)
    last_ok, last_err, err_at = conn.execute(
        """
        SELECT max(finished_at) FILTER (WHERE status = 'ok'),
               (array_agg(error ORDER BY finished_at DESC) FILTER (WHERE status = 'failed'))[1],
               max(finished_at) FILTER (WHERE status = 'failed')
        FROM braze_sync.run_summaries WHERE account_id = %s AND consumer = %s
        """,
        (account_id, entity),
    ).fetchone()
    reasons = conn.execute(
        "SELECT reason, count(*) FROM braze_sync.rejected_rows "
        "WHERE account_id = %s AND consumer = %s AND retried_at IS NULL GROUP BY reason ORDER BY 2 DESC, 1",
        (account_id, entity),
    ).fetchall()
    dropped = conn.execute(
        "SELECT coalesce(sum(skipped), 0) FROM braze_sync.run_summaries "
        "WHERE account_id = %s AND consumer = %s AND status = 'off'",
        (account_id, entity),
    ).fetchone()[0]
    return AccountStatus(
        account_id,
        entity,
        backlog=waiting.rows if waiting else 0,
        lag_seconds=waiting.lag_seconds if waiting else 0.0,
        last_success=last_ok,
        last_error=last_err if (err_at and (not last_ok or err_at > last_ok)) else None,
        rejected=sum(n for _, n in reasons),
        rejected_by_reason=dict(reasons[:TOP_REASONS]),
        dropped_while_off=int(dropped),
    )


def previous_run(conn: psycopg.Connection, account_id: str, entity: str) -> PreviousRun | None:
    """How the account's last recorded run of the entity ended (None: it never ran)."""
    row = conn.execute(
        "SELECT status, error FROM braze_sync.run_summaries WHERE account_id = %s AND consumer = %s "
        "ORDER BY finished_at DESC, id DESC LIMIT 1",
        (account_id, entity),
    ).fetchone()
    return PreviousRun(*row) if row else None


def status_rows(conn: psycopg.Connection) -> list[dict]:
    """One status per (account, entity) with an integration (`AccountStatus` as a dict): what `status` prints."""
    rows = []
    for acct in load_accounts(conn):
        for name, spec in ENTITIES.items():
            row = account_status(conn, acct.account_id, name)
            row.enabled = spec.is_enabled(acct)
            rows.append(asdict(row))
    return rows


def format_age(seconds: float) -> str:
    """`42s`, `7m`, `3h`, `2d`: a lag at a glance."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def held_by_customers(rows: list[AccountStatus]) -> list[tuple[AccountStatus, AccountStatus]]:
    """(row, the account's customers row) for each entity with a backlog that cannot move past the
    customers consumer while customer changes wait unsent (docs/live.md#profile-before-event)."""
    customers = {r.account_id: r for r in rows if r.entity == CUSTOMERS.name and r.enabled}
    return [
        (r, customers[r.account_id])
        for r in rows
        if r.enabled
        and r.backlog
        and ENTITIES[r.entity].after_customers
        and r.account_id in customers
        and customers[r.account_id].backlog
    ]
