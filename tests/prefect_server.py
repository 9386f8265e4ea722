"""A real Prefect API server (`prefect server start`) for the tests that need one in another process.

Shared by the `prefect_server` fixtures of `tests/scaleout/` and `tests/reliability/`; each
conftest wraps `running_prefect_server` in its own session-scoped fixture. The server keeps
everything it stores (its SQLite database, results, its output in `server.log`) under the
PREFECT_HOME it is given, so a test can scan all of it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 20
POLL_SECONDS = 0.3


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """Run `prefect server start` on SQLite under PREFECT_HOME=`home` until the block ends.

    Yields the PREFECT_* variables that point a process at it (PREFECT_HOME, PREFECT_API_URL,
    ephemeral server and analytics off, logging at WARNING). The server inherits the rest of
    `os.environ`, runs from the repository root and writes its output to `home / "server.log"`;
    it is terminated (killed after 20 s) when the block exits.
    """
    port = free_port()
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            _wait_until_healthy(server, port, log_path)
            yield env
        finally:
            server.terminate()
            try:
                server.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_until_healthy(server: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Prefect server did not start: {log_path.read_text()[-2000:]}")
        time.sleep(POLL_SECONDS)
