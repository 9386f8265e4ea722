"""Operations tests (issue 14): a real Prefect server for the session (`prefect server start`,
SQLite under its own PREFECT_HOME), in-process flows pointed at it, and API read-outs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.prefect_server import running_prefect_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ops/" in str(item.fspath) and "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` for the session; yields the PREFECT_* environment pointing at it."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@pytest.fixture
def in_prefect(prefect_server: dict[str, str]) -> Iterator[str]:
    """Run this test's in-process flows against `prefect_server`; yields its API URL."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        yield prefect_server["PREFECT_API_URL"]
        APILogHandler().flush()  # send the queued run logs while the server is still there
        EventsWorker.drain_all()


@pytest.fixture
def cli_env(prefect_server: dict[str, str], db) -> dict[str, str]:
    """The environment of a CLI subprocess: the server, the test database, Prefect's default log level."""
    env = {**os.environ, **prefect_server}
    env.pop("PREFECT_LOGGING_LEVEL")  # the CLI decides what the console shows
    return env


def api_post(api: str, path: str, body: dict) -> list[dict]:
    """POST a filter to the Prefect API; the JSON list it answers."""
    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    assert response.status_code == 200, (path, response.text[:300])
    data = response.json()
    return data["events"] if isinstance(data, dict) and "events" in data else data
