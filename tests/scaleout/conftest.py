"""A real Prefect server (`prefect server start`, SQLite in a temp folder) for scale-out tests,
and a helper to run the CLI in separate processes against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.prefect_server import running_prefect_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start a Prefect API server for the session; yields the environment that points at it.

    Every PREFECT_* variable of the session's environment, with the server's own on top.
    """
    with running_prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield {k: v for k, v in {**os.environ, **env}.items() if k.startswith("PREFECT_")}


@pytest.fixture
def run_env(prefect_server: dict[str, str], db) -> dict[str, str]:
    """The environment for subprocesses: the Prefect server, the test database, local endpoints."""
    return {**os.environ, **prefect_server}


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `masivo-braze ARGS` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/scaleout/" in str(item.fspath):
            item.add_marker(pytest.mark.prefect)
