"""Run history an operator can read, and alerts, against a real Prefect server (issue 14).

Idle accounts start no run; a failing account's run ends in one line with its report and the
parent's message names the reason; no pickled exception is left behind; the CLI's INFO logs reach
the server; the shipped automations exist after install and fire on a failing account; the
events carry ids and counts only.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masivo_braze_sync.errors import AccountSyncFailed
from tests.ops.conftest import api_post

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 90


def _runs(api: str, names: list[str]) -> list[dict]:
    return api_post(api, "/flow_runs/filter", {"flow_runs": {"name": {"any_": names}}})


def _artifacts(api: str, key: str) -> list[dict]:
    return api_post(api, "/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})


def _logs(api: str, flow_run_id: str) -> list[dict]:
    return api_post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})


def _events(api: str, prefix: str) -> list[dict]:
    return api_post(api, "/events/filter", {"filter": {"event": {"prefix": [prefix]}}, "limit": 50})


def _eventually(what: str, probe):
    deadline = time.monotonic() + WAIT_SECONDS
    while not (found := probe()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(1)
    return found


def _storage_files() -> set[Path]:
    from prefect.settings import get_current_settings

    path = Path(get_current_settings().results.local_storage_path)
    return set(path.rglob("*")) if path.exists() else set()


def test_the_cli_runs_only_accounts_with_work_and_its_info_logs_reach_the_server(
    cli_env, make_account, add_events
) -> None:
    make_account("busy", customers=1)
    add_events("busy", 5)
    make_account("idle-1", customers=1)
    make_account("idle-2", customers=1)

    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "sync", "events"],
        env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "idle" in cli.stdout
    assert "Finished in state" not in cli.stdout + cli.stderr  # the console stays quiet

    api = cli_env["PREFECT_API_URL"]
    runs = _runs(api, ["events-busy", "events-idle-1", "events-idle-2"])
    assert [r["name"] for r in runs] == ["events-busy"]  # idle accounts: no run
    (run,) = runs
    assert {"entity:events", "account:busy"} <= set(run["tags"])
    (parent,) = api_post(api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [run["parent_task_run_id"] and
        _parent_id(api, run)]}}})  # fmt: skip
    assert re.fullmatch(r"events-\d{4}-\d\d-\d\dT\d\d:\d\d", parent["name"]), parent["name"]

    lines = _eventually("the account run's logs", lambda: _logs(api, run["id"]))
    messages = [(entry["level"], entry["message"]) for entry in lines]
    assert (20, "account busy: 5 rows read, 5 objects sent in 1 requests, 0 rejected, 0 skipped") in [
        (level, re.sub(r" \(\d+\.\d+s\)$", "", m)) for level, m in messages
    ]
    assert not [m for level, m in messages if level < 30 and "Task run" in m]  # no per-task "Completed" lines
    assert not [e for e in lines if e["task_run_id"] and e["level"] < 30]

    assert _artifacts(api, "events-account-busy")
    assert not _artifacts(api, "events-account-idle-1")


def _parent_id(api: str, run: dict) -> str:
    (task_run,) = api_post(api, "/task_runs/filter", {"task_runs": {"id": {"any_": [run["parent_task_run_id"]]}}})
    return task_run["flow_run_id"]


def test_a_failing_account_explains_itself_in_one_line_and_leaves_no_pickle(
    in_prefect, make_account, add_events
) -> None:
    from flows.events import sync_events

    make_account("good", customers=1)
    add_events("good", 10)
    make_account("revoked", customers=1, api_key="not-the-key")
    add_events("revoked", 10)
    before = _storage_files()

    with pytest.raises(AccountSyncFailed) as info:
        asyncio.run(sync_events())
    assert "revoked: Braze refused the API key for this workspace (401)" in str(info.value)
    assert _storage_files() == before  # no pickled exception under PREFECT_HOME/storage

    api = in_prefect
    (run,) = _runs(api, ["events-revoked"])
    assert run["state"]["type"] == "FAILED"
    parent = api_post(api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [_parent_id(api, run)]}}})[0]
    assert parent["state"]["type"] == "FAILED"
    assert "revoked: Braze refused the API key for this workspace (401)" in parent["state"]["message"]

    (report,) = _artifacts(api, "events-account-revoked")
    assert "**failed**" in report["data"]
    assert "(401)" in report["data"]
    assert "10 changes waiting" in report["data"]

    def logged() -> list[dict]:
        lines = _logs(api, run["id"])
        one_line = "account revoked: events failed: Braze refused the API key"
        return lines if any(e["level"] >= 40 and one_line in e["message"] for e in lines) else []

    lines = _eventually("the failure in one log line", logged)
    assert not [e["message"] for e in lines if "Traceback" in e["message"]]


def test_the_automations_exist_after_install_fire_on_a_failing_account_and_events_carry_no_data(
    in_prefect, cli_env, make_account, add_events
) -> None:
    from flows.events import sync_events

    api = in_prefect
    for _ in range(2):  # installing again replaces, never duplicates
        installed = subprocess.run(
            [sys.executable, "deployments/automations.py"],
            env=cli_env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stdout + installed.stderr
    automations = {a["name"]: a for a in api_post(api, "/automations/filter", {})}
    ours = {"masivo: account sync failing", "masivo: entity not synced", "masivo: rows rejected"}
    assert ours <= set(automations)
    assert len([a for a in automations.values() if a["name"] in ours]) == 3
    failing = automations["masivo: account sync failing"]["id"]

    make_account("broken", customers=1, api_key="wrong")  # its first failure: not a repeat
    add_events("broken", 3)
    with pytest.raises(AccountSyncFailed):
        asyncio.run(sync_events(account_ids=["broken"]))

    def fired() -> list[dict]:
        return [
            e for e in _events(api, "prefect.automation.triggered")
            if e["resource"]["prefect.resource.id"] == f"prefect.automation.{failing}"
        ]  # fmt: skip

    _eventually("the failing-account automation fired", fired)

    ours_events = _eventually("the masivo events", lambda: _events(api, "masivo."))
    failed = [e for e in ours_events if e["event"] == "masivo.sync.failed"]
    assert any(e["resource"]["masivo.account"] == "broken" for e in failed)
    dump = json.dumps(ours_events)
    for needle in ("wrong", "not-the-key", "@example.com"):  # keys and the customers' emails
        assert needle not in dump
