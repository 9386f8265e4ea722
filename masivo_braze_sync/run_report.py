"""An account run's report for the orchestrator's UI: what it did and where the account stands.

One markdown document per run, keyed per entity and account (`artifact_key`), so the keyed history
is the account's history. Counts, reasons and ids only (`summary.py`, `status.py`).
"""

from __future__ import annotations

import re

from masivo_braze_sync.status import AccountStatus, format_age
from masivo_braze_sync.summary import COUNTERS, LABELS, AccountSummary


def artifact_key(entity: str, account_id: str) -> str:
    """The artifact key of an account's runs of an entity (keys allow a-z, 0-9 and dashes only)."""
    slug = re.sub(r"[^a-z0-9]+", "-", account_id.lower()).strip("-") or "account"
    return f"{entity}-account-{slug}"


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def account_report(summary: AccountSummary, status: AccountStatus | None) -> str:
    """The markdown report of one account run (`status`: where the account stands after it)."""
    s = summary
    out = [f"### {s.entity} · account `{s.account_id}` · **{s.status}**", ""]
    if s.error:
        out += [f"**Error:** {s.error}", ""]
    out += _table(
        (*(LABELS[c] for c in COUNTERS), "batches", "seconds"),
        [(*(f"{getattr(s, c):,}" for c in COUNTERS), s.batches, f"{s.seconds:.1f}")],
    )
    out.append("")
    if status is not None:
        lag = f", the oldest {format_age(status.lag_seconds)} old" if status.backlog else ""
        last = status.last_success.strftime("%Y-%m-%d %H:%M:%S %Z") if status.last_success else "never"
        out += [f"**Backlog:** {status.backlog:,} changes waiting{lag} · **Last success:** {last}", ""]
        if status.rejected_by_reason:
            out += [f"**Rejected rows waiting** ({status.rejected:,}; `masivo-braze rejected` lists them):", ""]
            out += _table(("reason", "rows"), [(r, f"{n:,}") for r, n in status.rejected_by_reason.items()])
            out.append("")
    if s.skip_reasons:
        out += ["**Skipped in this run** (nothing to send):", ""]
        out += _table(("reason", "rows"), [(r, f"{n:,}") for r, n in sorted(s.skip_reasons.items())])
        out.append("")
    sent, full = s.metrics.get("attributes_sent"), s.metrics.get("attributes_full_resend")
    if full:
        saved = 100 * (1 - (sent or 0) / full)
        out.append(
            f"**Billed attributes:** {sent or 0:,} sent; a full re-send would have cost {full:,} ({saved:.0f}% saved)"
        )
    return "\n".join(out).rstrip() + "\n"
