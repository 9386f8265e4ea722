"""The events a sync emits for alerting: names, resource labels and payloads, built from summaries.

Defined here once; the Prefect shell emits them (`flows/alerts.py`) and the shipped automations
match on them (`deployments/automations.py`). Users can build their own automations on the same
events. Labels and payloads carry ids, statuses and counts only (and our one-line error, which is
written to hold ids and counts): never a key, a payload or a customer's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masivo_braze_sync.summary import COUNTERS, AccountSummary

#: an account's run of an entity ended with its backlog sent (or the entity's parent run ended)
SYNC_COMPLETED = "masivo.sync.completed"
#: an account's run of an entity failed
SYNC_FAILED = "masivo.sync.failed"
#: an account's run rejected rows (label `masivo.above-threshold` says whether it is many)
ROWS_REJECTED = "masivo.rows.rejected"

#: resource-id prefixes: one resource per account and entity, one per entity
ACCOUNT_RESOURCE = "masivo.account"
ENTITY_RESOURCE = "masivo.entity"


@dataclass(frozen=True)
class Signal:
    """One event to emit: its name, the resource it is about (labels), and a small payload."""

    event: str
    resource: dict[str, str]
    payload: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PreviousRun:
    """How the account's previous run of the entity ended (to tell a new failure from a repeat)."""

    status: str
    error: str | None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def account_resource(summary: AccountSummary) -> dict[str, str]:
    """The resource an account run's events are about: ids, status and every counter, as labels."""
    return {
        "prefect.resource.id": f"{ACCOUNT_RESOURCE}.{summary.account_id}.{summary.entity}",
        "prefect.resource.name": f"{summary.entity}-{summary.account_id}",
        "masivo.account": summary.account_id,
        "masivo.entity": summary.entity,
        "masivo.status": summary.status,
        **{f"masivo.{name}": str(getattr(summary, name)) for name in COUNTERS},
    }


def account_signals(summary: AccountSummary, previous: PreviousRun | None, *, rejected_threshold: int) -> list[Signal]:
    """The events of one finished account run.

    A failure is a repeat (`masivo.repeat = true`) when the previous run failed with the same
    error: the shipped alert ignores repeats, so it notifies once per account and error until the
    account recovers (`masivo.recovered = true` on the next completion).
    """
    resource = account_resource(summary)
    was_failing = previous is not None and previous.status == "failed"
    if summary.status == "failed":
        repeat = was_failing and previous.error == summary.error
        signals = [Signal(SYNC_FAILED, {**resource, "masivo.repeat": _flag(repeat)}, {"error": summary.error})]
    else:
        signals = [Signal(SYNC_COMPLETED, {**resource, "masivo.recovered": _flag(was_failing)})]
    if summary.rejected:
        above = summary.rejected >= rejected_threshold
        signals.append(
            Signal(
                ROWS_REJECTED,
                {**resource, "masivo.above-threshold": _flag(above)},
                {"rejected": summary.rejected, "threshold": rejected_threshold},
            )
        )
    return signals


def entity_signal(entity: str, summaries: list[AccountSummary]) -> Signal:
    """The event of an entity's run over all accounts reaching its end (accounts may have failed)."""
    by_status: dict[str, int] = {}
    for s in summaries:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    return Signal(
        SYNC_COMPLETED,
        {
            "prefect.resource.id": f"{ENTITY_RESOURCE}.{entity}",
            "prefect.resource.name": f"sync-{entity}",
            "masivo.entity": entity,
            "masivo.accounts": str(len(summaries)),
            **{f"masivo.accounts.{status}": str(n) for status, n in sorted(by_status.items())},
        },
    )
