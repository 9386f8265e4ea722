"""What one account's run did: the counters, defined once.

`AccountSummary`'s fields are the single definition of the run counters. The delivery counters
(`DELIVERY_COUNTERS`), the table columns of Prefect artifacts and the CLI (`TABLE_COLUMNS`,
`LABELS`) and the `braze_sync.run_summaries` insert are all derived from them; only the table's
DDL (a migration, i.e. history) states the columns again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import psycopg


def _counter(label: str, *, delivery: bool = False) -> int:
    return field(default=0, metadata={"label": label, "delivery": delivery})


@dataclass
class AccountSummary:
    """What one account's run did. Counts only: safe for Prefect artifacts and logs."""

    account_id: str
    entity: str
    status: str = "ok"  # ok | failed | busy | idle (nothing to send: no run was started)
    rows_read: int = _counter("read")
    objects_sent: int = _counter("sent", delivery=True)
    rejected: int = _counter("rejected", delivery=True)
    skipped: int = _counter("skipped")
    requests: int = _counter("requests", delivery=True)
    retries: int = _counter("retries", delivery=True)
    rate_limited: int = _counter("429s", delivery=True)
    possibly_duplicated: int = _counter("dup?", delivery=True)
    batches: int = 0
    seconds: float = 0.0
    error: str | None = None
    skip_reasons: dict[str, int] = field(default_factory=dict)
    #: entity-specific counts (customers: attributes sent vs a full re-send)
    metrics: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dict (JSON-able)."""
        return asdict(self)

    def add(self, counts: object) -> None:
        """Add another object's values of the delivery counters (a `DeliveryStats`) to these."""
        for name in DELIVERY_COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(counts, name))


#: the counters, in table order
COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(AccountSummary) if "label" in f.metadata)
#: the counters that delivery produces (`deliver.DeliveryStats` has exactly these)
DELIVERY_COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(AccountSummary) if f.metadata.get("delivery"))
#: short column labels for tables
LABELS: dict[str, str] = {f.name: f.metadata["label"] for f in fields(AccountSummary) if "label" in f.metadata}
#: the columns of an account's row in artifacts and the CLI
#: (`error` beside `status`: a wide table pushed the reason off the page)
TABLE_COLUMNS: tuple[str, ...] = ("account_id", "status", "error", *COUNTERS, "seconds")
#: the columns of `braze_sync.run_summaries` written from a summary
_RECORDED = ("consumer", "account_id", "status", *COUNTERS, "seconds", "error")


def summary_rows(summaries: list[AccountSummary]) -> list[dict]:
    """The artifact/CLI table rows: counts and ids only."""
    return [{c: getattr(s, c) for c in TABLE_COLUMNS} for s in summaries]


def record_summary(conn: psycopg.Connection, summary: AccountSummary, flow_run_id: str | None) -> None:
    """Insert `summary` into `braze_sync.run_summaries` (started `seconds` ago, finished now)."""
    values = [summary.entity, *(getattr(summary, c) for c in _RECORDED[1:])]
    conn.execute(
        f"INSERT INTO braze_sync.run_summaries (flow_run_id, {', '.join(_RECORDED)}, started_at, finished_at) "
        f"VALUES (%s, {', '.join(['%s'] * len(_RECORDED))}, now() - make_interval(secs => %s), now())",
        (flow_run_id, *values, summary.seconds),
    )
