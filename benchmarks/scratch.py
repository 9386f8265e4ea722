"""A throwaway database for one benchmark: created on the configured server, migrated, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from masivo_braze_sync.db import Database
from masivo_braze_sync.db.migrate import init_database


def database_url(server_url: str, name: str) -> str:
    """`server_url` pointed at the database `name`."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new database `<prefix>_<random>` with the sync schema and Masivo's source tables; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(server_url, name)
    try:
        db = Database(url)
        init_database(db, source=True)
        db.dispose()
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
