"""Helpers for the reliability tests (issue 8): ledger and emulator read-outs, settings overrides,
and a real Prefect server with its own PREFECT_HOME (so every byte Prefect stores can be scanned)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from masivo_braze_sync.settings import get_settings
from tests.prefect_server import running_prefect_server
from tests.throwaway_pg import throwaway_pg  # noqa: F401 - a fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a reliability test taking more than a few seconds")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.fspath) and "prefect_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.prefect)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set MASIVO_* variables for this test: `settings_env(BRAZE_CONCURRENCY=4)`."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"MASIVO_{name}", str(value))
        get_settings.cache_clear()

    return apply


# -- a real Prefect server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`prefect server start` on SQLite under a fresh PREFECT_HOME; yields the PREFECT_* environment.

    `PREFECT_HOME` in the result is where everything Prefect stores lives (database, results,
    the server's log in `server.log`): the secrets scan reads all of it.
    """
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@pytest.fixture
def in_prefect(prefect_server: dict[str, str]) -> Iterator[None]:
    """Run this test's in-process flows against `prefect_server`."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        yield
        APILogHandler().flush()  # send the queued run logs while the server is still there
