"""`masivo-braze status`: per account and entity, backlog, last success, last error, rejects, drops."""

from __future__ import annotations

import psycopg
from rich.console import Console
from rich.table import Table

from masivo_braze_sync.accounts import load_accounts
from masivo_braze_sync.capture import backlog, horizon_age_seconds, read_cursor
from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.entities import ENTITIES


def status_rows(conn: psycopg.Connection) -> list[dict]:
    """One dict per (account, entity) with an integration: the numbers `status` prints."""
    rows = []
    for acct in load_accounts(conn):
        for name, spec in ENTITIES.items():
            cursor = read_cursor(conn, consumer=name, account_id=acct.account_id)
            last_ok, last_err, err_at = conn.execute(
                """
                SELECT max(finished_at) FILTER (WHERE status = 'ok'),
                       (array_agg(error ORDER BY finished_at DESC) FILTER (WHERE status = 'failed'))[1],
                       max(finished_at) FILTER (WHERE status = 'failed')
                FROM braze_sync.run_summaries WHERE account_id = %s AND consumer = %s
                """,
                (acct.account_id, name),
            ).fetchone()
            dropped = conn.execute(  # changes made while it was switched off (capture.skip_switched_off)
                "SELECT coalesce(sum(skipped), 0) FROM braze_sync.run_summaries "
                "WHERE account_id = %s AND consumer = %s AND status = 'off'",
                (acct.account_id, name),
            ).fetchone()[0]
            rejected = conn.execute(
                "SELECT count(*) FROM braze_sync.rejected_rows "
                "WHERE account_id = %s AND consumer = %s AND retried_at IS NULL",
                (acct.account_id, name),
            ).fetchone()[0]
            rows.append(
                {
                    "account_id": acct.account_id,
                    "entity": name,
                    "enabled": spec.is_enabled(acct),
                    "backlog": backlog(conn, entities=spec.captured, account_id=acct.account_id, after=cursor),
                    "last_success": last_ok,
                    "last_error": last_err if (err_at and (not last_ok or err_at > last_ok)) else None,
                    "rejected": rejected,
                    "dropped_while_off": int(dropped),
                }
            )
    return rows


def print_status(console: Console, db: Database) -> None:
    """Print the status table and the change-capture horizon's age."""
    with db.connection() as conn:
        rows = status_rows(conn)
        age = horizon_age_seconds(conn)
    table = Table(title="Braze sync status", title_justify="left")
    for col in ("account", "entity", "on", "backlog", "last success", "last error", "rejected", "dropped"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["account_id"],
            r["entity"],
            "yes" if r["enabled"] else "no",
            f"{r['backlog']:,}",
            r["last_success"].strftime("%Y-%m-%d %H:%M:%S %Z") if r["last_success"] else "never",
            r["last_error"] or "",
            f"{r['rejected']:,}",
            f"{r['dropped_while_off']:,}",
        )
    console.print(table)
    if age > 60:
        console.print(f"[yellow]oldest open transaction is {age:.0f}s old: changes after it wait until it ends[/]")
