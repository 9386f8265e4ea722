"""Shared fixtures: a real Postgres (a fresh database per test session), the Braze emulator over
loopback HTTP, and accounts wired to it.

With MASIVO_DATABASE_URL set (CI: the machine's Postgres) the session creates its own database
on that server and drops it at the end; unset, it uses the embedded Postgres. Either way the
code under test reads MASIVO_DATABASE_URL, pointed at the session's database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from masivo_braze_sync.db import Database
from masivo_braze_sync.db.migrate import init_database
from masivo_braze_sync.db.models import SOURCE_TABLES
from masivo_braze_sync.emulator import EmulatorServer, EmulatorState, Workspace
from masivo_braze_sync.settings import Settings, get_settings

# fast failure paths in tests: tiny backoff, short timeouts
TEST_ENV = {
    "MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS": "1",
    "MASIVO_BRAZE_BACKOFF_BASE_SECONDS": "0.01",
    "MASIVO_BRAZE_BACKOFF_MAX_SECONDS": "0.2",
    "MASIVO_BRAZE_TIMEOUT_SECONDS": "2",
    "MASIVO_BRAZE_MAX_RETRIES": "4",
}


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test session, on MASIVO_DATABASE_URL's server or the embedded one."""
    server_url = Database.from_settings(Settings()).url
    name = f"masivo_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    init_database(Database(url), source=True)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test settings in the environment; restored (and the settings cache cleared) after."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    """The session database, emptied before the test; MASIVO_DATABASE_URL points at it."""
    monkeypatch.setenv("MASIVO_DATABASE_URL", database_url)
    get_settings.cache_clear()
    database = Database(database_url)
    with database.connection() as conn:
        # every table of the sync schema (entities add their own) and Masivo's tables
        sync_tables = [
            f"braze_sync.{t}"
            for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'braze_sync' AND tablename <> 'alembic_version'"
            )
        ]
        sources = [f"public.{t.name}" for t in SOURCE_TABLES]
        conn.execute(f"TRUNCATE {', '.join(sources + sync_tables)} RESTART IDENTITY CASCADE")
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[tuple[EmulatorServer, EmulatorState]]:
    """One emulator for the session, on a free loopback port."""
    state = EmulatorState()
    with EmulatorServer(state, host="127.0.0.1", port=0) as server:
        yield server, state


@pytest.fixture
def emulator(emulator_server: tuple[EmulatorServer, EmulatorState]) -> EmulatorState:
    """The emulator's state, reset for this test (profiles, stats, faults)."""
    _, state = emulator_server
    state.reset()
    state.clear_faults()
    return state


@pytest.fixture
def emulator_url(emulator_server: tuple[EmulatorServer, EmulatorState]) -> str:
    """The emulator's base URL."""
    return emulator_server[0].url


@pytest.fixture
def make_account(db: Database, emulator: EmulatorState, emulator_url: str) -> Callable[..., str]:
    """Create an account, its Braze integration (pointing at the emulator) and its workspace."""

    def make(
        account_id: str = "acct-1",
        *,
        customers: int = 0,
        endpoint: str | None = None,
        api_key: str | None = None,
        workspace: dict | None = None,
        **integration: object,
    ) -> str:
        key = api_key if api_key is not None else f"{account_id}-key"
        emulator.add_workspace(Workspace(name=account_id, api_key=f"{account_id}-key", **(workspace or {})))
        columns = {"account_id": account_id, "api_key": key, "rest_endpoint": endpoint or emulator_url}
        columns.update(integration)
        with db.connection() as conn:
            conn.execute("INSERT INTO public.accounts (id, name) VALUES (%s, %s)", (account_id, account_id))
            conn.execute(
                f"INSERT INTO public.braze_integrations ({', '.join(columns)}) "
                f"VALUES ({', '.join(['%s'] * len(columns))})",
                tuple(columns.values()),
            )
            if customers:
                conn.execute(
                    "INSERT INTO public.customers (account_id, id, email) "
                    "SELECT %s, 'c' || g, 'c' || g || '@example.com' FROM generate_series(1, %s) g",
                    (account_id, customers),
                )
        return account_id

    return make


@pytest.fixture
def add_events(db: Database) -> Callable[..., list[str]]:
    """Insert events: `add_events("acct-1", 10, type="VISIT", customer="c1", properties={...})`."""
    counter = iter(range(1, 10**9))

    def add(account_id: str, n: int = 1, *, type: str = "VISIT", customer: str = "c1", properties=None) -> list[str]:
        from psycopg.types.json import Jsonb

        ids = [f"{account_id}-e{next(counter)}" for _ in range(n)]
        with db.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at) "
                "VALUES (%s, %s, %s, %s, %s, now())",
                # `eid` lets tests see which event the emulator received
                [(i, account_id, customer, type, Jsonb({"eid": i} | (properties or {}))) for i in ids],
            )
        return ids

    return add


@pytest.fixture
def received(emulator: EmulatorState) -> Callable[[str], list[str]]:
    """Event ids the emulator stored for a workspace, duplicates included (property `eid`)."""

    def ids(workspace: str) -> list[str]:
        return [e.get("properties", {}).get("eid") for p in emulator.profiles(workspace).values() for e in p.events]

    return ids


@pytest.fixture
def run_sync() -> Callable[..., object]:
    """Run one entity for one account through the core pipeline (no Prefect): returns the summary."""
    import asyncio

    from masivo_braze_sync.accounts import load_accounts
    from masivo_braze_sync.entities import ENTITIES
    from masivo_braze_sync.pipeline import AccountRun

    def run(account_id: str, entity: str = "events", **kwargs: object):
        database = Database(os.environ["MASIVO_DATABASE_URL"])
        with database.connection() as conn:
            (account,) = load_accounts(conn, [account_id])

        async def go():
            async with AccountRun(database, ENTITIES[entity], account, **kwargs) as r:
                await r.run()
            return r.summary

        return asyncio.run(go())

    return run
