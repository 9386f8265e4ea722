"""Readable run summaries for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from masivo_braze_sync.capture import horizon_age_seconds
from masivo_braze_sync.db import Database
from masivo_braze_sync.status import AccountStatus, format_age, held_by_customers, status_rows
from masivo_braze_sync.summary import COUNTERS, LABELS, AccountSummary

STATUS_STYLE = {"ok": "green", "failed": "bold red", "busy": "yellow"}


def summary_table(entity: str, summaries: list[AccountSummary]) -> Table:
    """One row per account: its status, every counter (`summary.COUNTERS`) and its seconds."""
    table = Table(title=f"{entity}: per-account summary", title_justify="left")
    table.add_column("account", overflow="fold")
    table.add_column("status", overflow="fold")
    for name in COUNTERS:
        table.add_column(LABELS[name], justify="right")
    table.add_column("secs", justify="right")
    for s in summaries:
        table.add_row(
            s.account_id,
            f"[{STATUS_STYLE.get(s.status, 'white')}]{s.status}[/]",
            *(f"{getattr(s, name):,}" for name in COUNTERS),
            f"{s.seconds:.2f}",
        )
    return table


def print_summaries(console: Console, entity: str, summaries: list[AccountSummary]) -> None:
    """Print the table, or a line saying no account had the entity switched on."""
    if not summaries:
        console.print(f"{entity}: no account has this sync switched on (or none matched --account).")
        return
    console.print(summary_table(entity, summaries))
    for s in summaries:
        if s.error:
            console.print(f"  [red]{s.account_id}[/]: {s.error}")
    sent = sum(s.metrics.get("attributes_sent", 0) for s in summaries)
    full = sum(s.metrics.get("attributes_full_resend", 0) for s in summaries)
    if full:
        saved = 100 * (1 - sent / full) if full else 0
        console.print(
            f"  attributes sent: {sent:,} (billed data points); a full re-send would cost {full:,} "
            f"({saved:.0f}% saved by sending only changed fields)"
        )


def print_live_summary(console: Console, rows: list[dict]) -> None:
    """A live session's totals, one row per (account, entity)."""
    if not rows:
        console.print("live: nothing was sent in this session.")
        return
    table = Table(title="live session: per-account summary", title_justify="left")
    columns = ("account_id", "consumer", "status", "batches", "rows_read", "objects_sent", "requests", "failures")
    for name in columns:
        table.add_column(name.replace("_", " "), justify="left" if name in columns[:3] else "right")
    for r in rows:
        table.add_row(*(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in columns))
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"  [red]{r['account_id']}[/] {r['consumer']}: {r['error']}")


def print_status(console: Console, db: Database) -> None:
    """Print the status table, the rejection reasons, what waits for the customers sync, and the
    change-capture horizon's age."""
    with db.connection() as conn:
        rows = [AccountStatus(**r) for r in status_rows(conn)]
        age = horizon_age_seconds(conn)
    table = Table(title="Braze sync status", title_justify="left")
    for col in ("account", "entity", "on", "backlog", "lag", "last success", "last error", "rejected", "dropped"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.account_id,
            r.entity,
            "yes" if r.enabled else "no",
            f"{r.backlog:,}",
            format_age(r.lag_seconds) if r.backlog else "",
            r.last_success.strftime("%Y-%m-%d %H:%M:%S %Z") if r.last_success else "never",
            r.last_error or "",
            f"{r.rejected:,}",
            f"{r.dropped_while_off:,}",
        )
    console.print(table)
    for r in rows:
        for reason, n in r.rejected_by_reason.items():
            console.print(f"  {r.account_id}/{r.entity}: {n:,} rejected: {reason}")
    for r, customers in held_by_customers(rows):
        why = f"; its last run failed: {customers.last_error}" if customers.last_error else ""
        console.print(
            f"  [yellow]{r.account_id}/{r.entity}[/]: waits for the customers sync "
            f"({customers.backlog:,} customer changes unsent; profiles go first){why}"
        )
    if age > 60:
        console.print(f"[yellow]oldest open transaction is {age:.0f}s old: changes after it wait until it ends[/]")
