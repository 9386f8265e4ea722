"""Where the database is, and how to talk to it.

`MASIVO_DATABASE_URL` wins; without it an embedded Postgres (the `pgserver` wheel) runs from a
git-ignored folder of the checkout, so `masivo-braze demo` and `pytest` need nothing installed.
Three drivers reach the same database: psycopg 3 for statements and transactions, SQLAlchemy
(on psycopg) for sqlmodel and Alembic, and ADBC for bulk reads into polars.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa

from masivo_braze_sync.errors import ConfigurationError
from masivo_braze_sync.settings import Settings, get_settings

log = logging.getLogger(__name__)

_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}


def _embedded_url(settings: Settings) -> str:
    """Start (or join) the embedded Postgres in `settings.embedded_dir` and return its URL."""
    import pgserver  # imported lazily: only the embedded default needs it

    path = settings.embedded_dir
    with _embedded_lock:
        server = _embedded_servers.get(str(path))
        if server is None:
            path.mkdir(parents=True, exist_ok=True)
            log.info("starting embedded Postgres in %s", path)
            # cleanup_mode="stop": the server stops when the last process using it exits
            server = pgserver.get_server(path, cleanup_mode="stop")
            _embedded_servers[str(path)] = server
    return server.get_uri()  # type: ignore[attr-defined]


def resolve_database_url(settings: Settings | None = None) -> str:
    """The libpq URL of Masivo's database: `MASIVO_DATABASE_URL`, or the embedded server's."""
    settings = settings or get_settings()
    url = settings.database_url or _embedded_url(settings)
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError("MASIVO_DATABASE_URL must be a postgresql:// URL")
    return url


def redact_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg 3 connection (the caller closes it)."""
    try:
        return psycopg.connect(url, autocommit=autocommit, application_name="masivo-braze-sync")
    except psycopg.OperationalError as exc:
        # the libpq message can hold the host and user but never the password
        raise ConfigurationError(f"cannot connect to Postgres at {redact_url(url)}: {exc}".strip()) from exc


@dataclass
class Database:
    """Connection factory for one database URL, shared by a process's pipeline code."""

    url: str
    _engine: sa.Engine | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Database:
        """The database the settings point at (starting the embedded one if needed)."""
        return cls(resolve_database_url(settings))

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection; without autocommit, commits on success and rolls back on error."""
        conn = connect(self.url, autocommit=autocommit)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    @property
    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine on psycopg 3 (sqlmodel, Alembic)."""
        if self._engine is None:
            parts = urlsplit(self.url)
            self._engine = sa.create_engine(urlunsplit(parts._replace(scheme="postgresql+psycopg")), pool_pre_ping=True)
        return self._engine

    def dispose(self) -> None:
        """Close pooled SQLAlchemy connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
