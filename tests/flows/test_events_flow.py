"""The events flow under Prefect: per-account runs, isolation, artifacts, and the CLI around it."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from typer.testing import CliRunner

from app.cli import app
from flows.events import sync_events
from masivo_braze_sync.errors import AccountSyncFailed


async def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


async def _account_runs() -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["sync-account"])))


def test_each_account_is_isolated_and_the_failures_are_named(
    prefect_api, make_account, add_events, received, emulator
) -> None:
    make_account("good", customers=1)
    good = add_events("good", 150)
    make_account("revoked", customers=1, api_key="not-the-key")
    add_events("revoked", 10)
    make_account("elsewhere", customers=1, endpoint="https://rest.iad-01.braze.com.evil.example")
    add_events("elsewhere", 10)
    make_account("quiet", customers=1, sync_events=False)
    add_events("quiet", 10)

    with pytest.raises(AccountSyncFailed) as info:
        asyncio.run(sync_events())

    assert set(info.value.failures) == {"revoked", "elsewhere"}
    assert "401" in info.value.failures["revoked"]
    assert "not-the-key" not in str(info.value.failures)
    by_account = {s.account_id: s for s in info.value.summaries}
    assert set(by_account) == {"good", "revoked", "elsewhere"}  # the toggle-off account is not run
    assert (by_account["good"].status, by_account["good"].objects_sent) == ("ok", 150)
    assert sorted(received("good")) == sorted(good)
    assert emulator.profiles("quiet") == {}

    runs = {r.name: r for r in asyncio.run(_account_runs())}
    assert {"events-good", "events-revoked", "events-elsewhere"} <= set(runs)
    assert runs["events-good"].state.is_completed()
    assert runs["events-revoked"].state.is_failed()

    import json

    tables = [
        a.data if isinstance(a.data, list) else json.loads(a.data)
        for a in asyncio.run(_artifacts("events-sync-summary"))
    ]
    # other tests publish this key too: take the table of this run (the one with its accounts)
    (rows,) = [
        {r["account_id"]: r for r in t}
        for t in tables
        if {r["account_id"] for r in t} == {"good", "revoked", "elsewhere"}
    ]
    assert rows["good"]["objects_sent"] == 150
    assert rows["revoked"]["status"] == "failed"


def test_cli_sync_prints_the_summary_and_exits_non_zero_naming_the_failing_account(
    prefect_api, make_account, add_events
) -> None:
    make_account("good", customers=1)
    add_events("good", 20)
    make_account("revoked", customers=1, api_key="nope")
    add_events("revoked", 1)

    result = CliRunner().invoke(app, ["sync", "events"])
    assert result.exit_code == 1, result.output
    assert "events: per-account summary" in result.output
    assert "failed: events/revoked" in result.output
    assert "nope" not in result.output

    again = CliRunner().invoke(app, ["sync", "events", "--account", "good"])
    assert again.exit_code == 0, again.output


def test_cli_dry_run_prints_payloads_sends_nothing_and_moves_no_cursor(
    prefect_api, make_account, add_events, emulator, db
) -> None:
    make_account("acct-1", customers=1)
    (event_id,) = add_events("acct-1", 1, properties={"store": {"id": 9}})
    result = CliRunner().invoke(app, ["sync", "events", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"store_id":9' in result.output
    assert event_id in result.output
    assert emulator.stats("acct-1").requests == 0
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM braze_sync.cursors").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM braze_sync.batches").fetchone()[0] == 0


def test_db_init_is_safe_to_run_twice(prefect_api, db) -> None:
    from alembic.script import ScriptDirectory

    from masivo_braze_sync.db.migrate import MIGRATIONS, _alembic_config

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    assert MIGRATIONS.is_dir()
    for _ in range(2):
        result = CliRunner().invoke(app, ["db", "init", "--source"])
        assert result.exit_code == 0, result.output
        assert f"sync schema at revision {head}" in result.output


def test_demo_runs_end_to_end_and_prints_the_summary(prefect_api, db) -> None:
    result = CliRunner().invoke(app, ["demo", "--events", "300"])
    assert result.exit_code == 0, result.output
    assert "events: per-account summary" in result.output
    assert "What the Braze emulator received" in result.output
    assert "commit → Braze, ms" in result.output  # then live mode: each change's latency
    assert "not arrived" not in result.output
    for account in ("demo-andes", "demo-caribe", "demo-pampa"):
        assert account in result.output


def test_a_backlog_of_many_batches_reads_ahead_and_sends_each_event_once_in_the_fewest_requests(
    prefect_api, make_account, add_events, received, emulator, monkeypatch
) -> None:
    # the flow maps the next range while a batch is delivered, and ends full batches at whole
    # requests: both must keep every event exactly once across many batch boundaries
    from masivo_braze_sync.settings import get_settings
    from tests.batch_helpers import min_requests

    monkeypatch.setenv("MASIVO_BATCH_ROWS", "250")
    get_settings.cache_clear()
    make_account("acct-1", customers=1)
    ids: list[str] = []
    for _ in range(6):
        ids += add_events("acct-1", 160)
        add_events("acct-1", 17, type="EXPIRE")
    (summary,) = asyncio.run(sync_events())
    assert Counter(received("acct-1")) == Counter(ids)
    assert summary["requests"] == emulator.stats("acct-1").requests == min_requests(len(ids))
    assert (summary["rows_read"], summary["skipped"]) == (6 * 177, 6 * 17)
    assert summary["batches"] >= 5
