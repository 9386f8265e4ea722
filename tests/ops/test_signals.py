"""The alert events built from run summaries (no Prefect): ids and counts only, repeats marked."""

from __future__ import annotations

from masivo_braze_sync.signals import (
    ROWS_REJECTED,
    SYNC_COMPLETED,
    SYNC_FAILED,
    PreviousRun,
    account_signals,
    entity_signal,
)
from masivo_braze_sync.summary import AccountSummary


def _failed(error: str = "account a: Braze refused the API key for this workspace (401)") -> AccountSummary:
    return AccountSummary("a", "events", status="failed", error=error, rows_read=3)


def test_a_new_failure_is_not_a_repeat_and_the_same_failure_again_is() -> None:
    (first,) = account_signals(_failed(), PreviousRun("ok", None), rejected_threshold=10)
    (again,) = account_signals(_failed(), PreviousRun("failed", _failed().error), rejected_threshold=10)
    previous = PreviousRun("failed", _failed().error)
    (other,) = account_signals(_failed("account a: other"), previous, rejected_threshold=10)
    assert (first.event, first.resource["masivo.repeat"]) == (SYNC_FAILED, "false")
    assert again.resource["masivo.repeat"] == "true"
    assert other.resource["masivo.repeat"] == "false"
    assert first.resource["masivo.account"] == "a"
    assert first.resource["masivo.rows_read"] == "3"
    assert all(isinstance(v, str) for v in first.resource.values())


def test_recovery_and_rejections_are_flagged() -> None:
    ok = AccountSummary("a", "events", rejected=12)
    completed, rejected = account_signals(ok, PreviousRun("failed", "x"), rejected_threshold=10)
    assert (completed.event, completed.resource["masivo.recovered"]) == (SYNC_COMPLETED, "true")
    assert (rejected.event, rejected.resource["masivo.above-threshold"]) == (ROWS_REJECTED, "true")
    (_, few) = account_signals(AccountSummary("a", "events", rejected=2), None, rejected_threshold=10)
    assert few.resource["masivo.above-threshold"] == "false"


def test_the_entity_event_counts_accounts_by_status() -> None:
    signal = entity_signal("events", [AccountSummary("a", "events", status="idle"), _failed()])
    assert signal.resource["prefect.resource.id"] == "masivo.entity.events"
    assert (signal.resource["masivo.accounts.idle"], signal.resource["masivo.accounts.failed"]) == ("1", "1")
