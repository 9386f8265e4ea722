"""Secrets and personal data: after real runs, API keys and customers' emails and phones appear
nowhere in what Prefect stores (its database, its server's log, results), in its API's artifacts,
logs and flow runs, in the CLI's output and error messages, or in the log records of the process.
Errors name the account, never the key. Keys can live in a Prefect Secret block instead.

A real Prefect server with its own PREFECT_HOME runs for the session, so "everything Prefect
stores" is a folder this test can read byte by byte; the CLI runs in a subprocess against it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from psycopg.types.json import Jsonb

from masivo_braze_sync.emulator import Workspace
from masivo_braze_sync.errors import AccountSyncFailed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "pii-plain": "brz-PLAINKEY-7f3a9c1e2d4b",  # in braze_integrations.api_key
    "pii-vault": "brz-VAULTKEY-5b8e1d4f6a2c",  # in a Prefect Secret block
    "pii-revoked": "brz-REVOKEDKEY-0c9d8e7f1a3b",  # Braze refuses it (401)
}
BLOCK = "pii-vault-braze-key"
MISSING_BLOCK = "no-such-braze-key-block"


def _customers(account: str) -> list[tuple[str, str, str, str]]:
    """(id, email, raw phone, E.164 phone) of the account's customers: distinctive strings."""
    n = sorted([*KEYS, "pii-missing"]).index(account)
    return [
        (f"c{i}", f"zelda.pii{n}{i}.q7x@example.org", f"+57 300 555 {n}{i:03d}", f"+57300555{n}{i:03d}")
        for i in range(1, 4)
    ]


def _needles() -> list[str]:
    people = [s for a in [*KEYS, "pii-missing"] for c in _customers(a) for s in c[1:]]
    return [*KEYS.values(), *people, "Bearer brz-"]


def _setup(db, emulator, make_account) -> None:
    for account in [*KEYS, "pii-missing"]:
        make_account(account)
        with db.connection() as conn:
            for cid, email, phone, _ in _customers(account):
                conn.execute(
                    "INSERT INTO customers (account_id, id, email, phone, country, attributes) "
                    "VALUES (%s, %s, %s, %s, 'CO', %s)",
                    (account, cid, email, phone, Jsonb({"backup_email": email})),
                )
                conn.execute(
                    "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                    "VALUES (%s, %s, %s, 'VISIT', %s, now()), (%s, %s, %s, 'VISIT', %s, now())",
                    (
                        f"{account}-{cid}-e1",
                        account,
                        cid,
                        Jsonb({"contact": {"email": email, "phone": phone}}),
                        f"{account}-{cid}-e2",  # rejected (a string over 255 characters): the reason
                        account,  # must name the property, never quote it
                        cid,
                        Jsonb({"note": (email + " ") * 20}),
                    ),
                )
    stored = {
        "pii-plain": KEYS["pii-plain"],
        "pii-vault": f"prefect-secret:{BLOCK}",
        "pii-revoked": KEYS["pii-revoked"],
    }
    stored["pii-missing"] = f"prefect-secret:{MISSING_BLOCK}"
    with db.connection() as conn:
        for account, value in stored.items():
            conn.execute("UPDATE braze_integrations SET api_key = %s WHERE account_id = %s", (value, account))
    for account in ("pii-plain", "pii-vault"):  # the emulator knows these two keys; not the revoked one
        emulator.add_workspace(Workspace(name=account, api_key=KEYS[account]))


def _api_dump(api: str) -> str:
    """Everything the API serves about runs: artifacts, logs, flow and task runs, events."""
    out = []
    with httpx.Client(base_url=api, timeout=30) as client:
        for path in ("/artifacts/filter", "/logs/filter", "/flow_runs/filter", "/task_runs/filter"):
            response = client.post(path, json={"limit": 200})
            assert response.status_code == 200, (path, response.text[:200])
            out.append(response.text)
        events = client.post("/events/filter", json={"limit": 50})
        if events.status_code == 200:
            out.append(events.text)
    return "\n".join(out)


def _scan_folder(home: Path, needles: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(path.relative_to(home))] = hits
    return found


def test_no_key_or_personal_data_reaches_prefect_logs_artifacts_or_cli_output(
    prefect_server, in_prefect, db, emulator, make_account, caplog
) -> None:
    from prefect.blocks.system import Secret

    from flows.customers import sync_customers

    _setup(db, emulator, make_account)
    Secret(value=KEYS["pii-vault"]).save(BLOCK, overwrite=True)

    # the CLI, in its own process, against the server, logging everything it logs
    env = {**os.environ, **prefect_server, "PREFECT_LOGGING_LEVEL": "DEBUG"}
    cli = subprocess.run(
        [sys.executable, "-m", "app.cli", "sync", "events"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = cli.stdout + cli.stderr
    assert cli.returncode == 1, output[-3000:]
    flat = " ".join(output.split())  # rich wraps long lines
    assert "failed: events/pii-revoked: Braze refused the API key for this workspace (401)" in flat
    missing = f"account pii-missing: api_key refers to the Prefect Secret block '{MISSING_BLOCK}', which does not exist"
    assert f"failed: events/pii-missing: {missing}" in flat

    # the customers flow in this process, with every log record captured
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AccountSyncFailed) as info:
        asyncio.run(sync_customers())
    assert set(info.value.failures) == {"pii-revoked", "pii-missing"}
    assert info.value.failures["pii-missing"] == missing
    assert "401" in info.value.failures["pii-revoked"]

    # the key from the Secret block worked: its account's data is in Braze, PII included
    assert emulator.profile("pii-vault", "c1").attributes["email"] == _customers("pii-vault")[0][1]
    assert emulator.profile("pii-plain", "c3").attributes["phone"] == _customers("pii-plain")[2][3]
    assert len(emulator.profile("pii-vault", "c2").events) == 1

    records = (
        "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.__dict__}" for r in caplog.records)
        + caplog.text
        + str(info.value)
        + repr(info.value.failures)
    )

    api = prefect_server["PREFECT_API_URL"]
    served = _api_dump(api)
    assert "pii-revoked" in served  # the scan sees the runs
    assert "events-sync-summary" in served
    assert "customers-sync-summary" in served  # the in-process runs went to the same server
    home = Path(prefect_server["PREFECT_HOME"])
    seen = _scan_folder(home, ["events-pii-vault", "customers-pii-vault"])
    assert {n for hits in seen.values() for n in hits} == {"events-pii-vault", "customers-pii-vault"}

    needles = _needles()
    leaks = {
        "CLI output": [n for n in needles if n in output],
        "log records": [n for n in needles if n in records],
        "Prefect API": [n for n in needles if n in served],
        "PREFECT_HOME": _scan_folder(home, needles),
    }
    assert leaks == {"CLI output": [], "log records": [], "Prefect API": [], "PREFECT_HOME": {}}
