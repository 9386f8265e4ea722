"""The operator's side of partitions: `masivo-braze partitions` and `sync --partition`, through
the Prefect flows (docs/operations.md#partitions)."""

from __future__ import annotations

from collections import Counter

from typer.testing import CliRunner

from app.cli import app
from tests.capture_helpers import settle


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_partitions_are_set_shown_and_synced_one_by_one_or_all_at_once(
    prefect_api, db, make_account, add_events, received
) -> None:
    make_account("acct-1", customers=10)
    assert "events/acct-1: 1 partition(s)" in _cli("partitions", "acct-1", "events")
    out = _cli("partitions", "acct-1", "events", "2")
    assert "events/acct-1: 1 → 2 partition(s)" in out
    assert "--partition P" in out
    assert "2 partition(s)" in _cli("partitions", "acct-1", "events")
    assert "cannot be partitioned" in _cli("partitions", "acct-1", "audiences", "2", code=2)

    ids = [e for c in range(1, 11) for e in add_events("acct-1", 3, customer=f"c{c}")]
    settle(db, "acct-1")
    _cli("sync", "events", "--account", "acct-1", "--partition", "1")
    with db.connection() as conn:
        sent_by = dict(conn.execute("SELECT consumer, sum(log_rows) FROM braze_sync.batches GROUP BY 1").fetchall())
    assert list(sent_by) == ["events#1of2"]
    assert 0 < len(received("acct-1")) < len(ids)
    _cli("sync", "events", "--account", "acct-1", "--partition", "0")
    assert sorted(received("acct-1")) == sorted(ids)

    more = [e for c in range(1, 11) for e in add_events("acct-1", 2, customer=f"c{c}")]
    settle(db, "acct-1")
    _cli("sync", "events", "--account", "acct-1")  # every partition of the account
    got = Counter(received("acct-1"))
    assert set(got) == set(ids + more)
    assert max(got.values()) == 1

    assert "--partition takes one partition" in _cli("sync", "all", "--account", "acct-1", "--partition", "0", code=2)
    assert "--partition must be 0 to 1" in _cli("sync", "events", "--account", "acct-1", "--partition", "2", code=2)
    assert "1 partition(s)" in _cli("partitions", "acct-1", "events", "1")
