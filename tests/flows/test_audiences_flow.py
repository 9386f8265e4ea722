"""The audiences flows under Prefect: the per-account sync, the manual resync, the CLI and the
deployments around them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import app
from flows.audiences import resync_audience, sync_audiences
from masivo_braze_sync.resync import ResyncRefused
from tests.pipeline.test_audiences_sync import VIP, _attrs, _audience

ROOT = Path(__file__).resolve().parents[2]


def test_sync_audiences_runs_each_account_with_the_toggle_on(prefect_api, make_account, emulator, db) -> None:
    make_account("good", customers=3)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"], account="good")
    make_account("quiet", customers=3, sync_audiences=False)
    _audience(db, "vip-q", "VIP Customers", ["c1"], account="quiet")

    summaries = {s["account_id"]: s for s in asyncio.run(sync_audiences())}
    assert set(summaries) == {"good"}  # the toggle-off account is not run
    assert (summaries["good"]["status"], summaries["good"]["objects_sent"]) == ("ok", 2)
    assert _attrs(emulator, "c1", "good") == {VIP: True}
    assert emulator.profiles("quiet") == {}


def test_resync_flow_resends_and_refuses_unknown_targets(prefect_api, make_account, emulator, db) -> None:
    make_account("acct-1", customers=3)
    _audience(db, "vip", "VIP Customers", ["c1", "c3"])
    summary = asyncio.run(resync_audience(account_id="acct-1", audience_id="vip"))
    assert (summary["entity"], summary["status"], summary["objects_sent"]) == ("audiences-resync", "ok", 2)
    assert _attrs(emulator, "c3") == {VIP: True}
    with pytest.raises(ResyncRefused, match="audience nope not found in account acct-1"):
        asyncio.run(resync_audience(account_id="acct-1", audience_id="nope"))


def test_resync_flow_loads_a_prefect_secret_api_key(prefect_api, make_account, emulator, db) -> None:
    from prefect.blocks.system import Secret

    Secret(value="acct-1-key").save("acct-1-braze-key", overwrite=True)
    make_account("acct-1", customers=2, api_key="prefect-secret:acct-1-braze-key")
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    summary = asyncio.run(resync_audience(account_id="acct-1", audience_id="vip"))
    assert (summary["status"], summary["objects_sent"]) == ("ok", 2)
    assert _attrs(emulator, "c2") == {VIP: True}


def test_cli_sync_audiences_and_sync_all(prefect_api, make_account, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1"])
    dry = CliRunner().invoke(app, ["sync", "audiences", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert '{"external_id":"c1","masivo_VIP Customers":true}' in dry.output
    assert emulator.stats("acct-1").requests == 0

    result = CliRunner().invoke(app, ["sync", "audiences"])
    assert result.exit_code == 0, result.output
    assert "audiences: per-account summary" in result.output
    assert _attrs(emulator, "c1") == {VIP: True}

    with db.connection() as conn:
        conn.execute("UPDATE audiences SET name = 'Gold' WHERE id = 'vip'")
    result = CliRunner().invoke(app, ["sync", "all"])
    assert result.exit_code == 0, result.output
    assert "audiences: per-account summary" in result.output
    assert _attrs(emulator, "c1") == {"masivo_Gold": True}


def test_cli_resync_audience(prefect_api, make_account, emulator, db) -> None:
    make_account("acct-1", customers=2)
    _audience(db, "vip", "VIP Customers", ["c1", "c2"])
    result = CliRunner().invoke(app, ["resync-audience", "acct-1", "vip"])
    assert result.exit_code == 0, result.output
    assert "audience resync: per-account summary" in result.output
    assert _attrs(emulator, "c2") == {VIP: True}
    requests = emulator.stats("acct-1").requests

    for args, message in (
        (["resync-audience", "nobody", "vip"], "account nobody not found"),
        (["resync-audience", "acct-1", "nope"], "audience nope not found in account acct-1"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert message in result.output
    assert emulator.stats("acct-1").requests == requests  # nothing sent


def test_deployments_schedule_the_sync_and_offer_the_manual_resync() -> None:
    spec = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    sync = spec["sync-audiences"]
    assert sync["entrypoint"] == "flows/audiences.py:sync_audiences"
    assert [s["cron"] for s in sync["schedules"]] == ["*/5 * * * *"]
    resync = spec["resync-audience"]
    assert resync["entrypoint"] == "flows/audiences.py:resync_audience"
    assert not resync.get("schedules")
    assert set(resync_audience.parameters.properties) == {"account_id", "audience_id"}
    assert resync_audience.parameters.required == ["account_id", "audience_id"]
