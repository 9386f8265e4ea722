"""A Postgres of a test's own, which the test may restart or stop (imported, not collected).

`pgserver` in a temporary folder, driven with its own `pg_ctl`: a fast restart ends every
session. Never the server the rest of the suite (or anyone else) uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest


@pytest.fixture
def throwaway_pg(tmp_path) -> Iterator[object]:
    """A Postgres of its own in a temporary folder, deleted afterwards."""
    import pgserver

    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def restart(server) -> None:
    """`pg_ctl restart -m fast`: every session is ended, the server is back when this returns."""
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def stop(server) -> None:
    """`pg_ctl stop -m fast`."""
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def start(server, url: str) -> None:
    """Start a stopped server again, on the socket folder of its `url` (as pgserver starts it)."""
    from pgserver._commands import pg_ctl

    socket_dir = parse_qs(urlsplit(url).query)["host"][0]
    args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "start"]
    pg_ctl(args, pgdata=server.pgdata, user=server.system_user, timeout=60)
