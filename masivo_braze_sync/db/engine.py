"""Where the database is, and how to talk to it.

`MASIVO_DATABASE_URL` wins; without it an embedded Postgres (the `pgserver` wheel) runs from a
git-ignored folder of the checkout, so `masivo-braze demo` and `pytest` need nothing installed.
Three drivers reach the same database: psycopg 3 for statements and transactions, SQLAlchemy
(on psycopg) for sqlmodel and Alembic, and ADBC for bulk reads into polars.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from masivo_braze_sync.errors import ConfigurationError, DatabaseUnavailable
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


@dataclass(frozen=True)
class ConnectRetry:
    """How long to keep trying to reach Postgres: a restart or a fail-over takes seconds, and every
    worker reconnects at once afterwards (hence the jitter). The defaults wait 15 to 20 s in all."""

    attempts: int = 5
    first_wait: float = 1.0
    max_wait: float = 8.0


CONNECT_RETRY = ConnectRetry()

#: the server's own refusals that no retry cures: a wrong role, password or database, pg_hba rules
_REFUSED = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied", "no password supplied")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed connection may succeed later (the server unreachable, starting, stopping,
    full) rather than being refused for its settings. libpq reports connection failures without a
    SQLSTATE, so the message is all there is to go on."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    return not any(reason in text for reason in _REFUSED)


def connect(url: str, *, autocommit: bool = False, retry: ConnectRetry = CONNECT_RETRY) -> psycopg.Connection:
    """A psycopg 3 connection (the caller closes it), retried with backoff while Postgres is away.

    Raises:
        DatabaseUnavailable: Postgres did not accept a connection in `retry.attempts` tries.
        ConfigurationError: Postgres refused the connection for its settings (role, password, database).
    """
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(retry.attempts),
            wait=wait_exponential_jitter(initial=retry.first_wait, max=retry.max_wait, jitter=retry.first_wait),
            retry=retry_if_exception(is_transient),
            reraise=True,
        ):
            with attempt:
                return psycopg.connect(url, autocommit=autocommit, application_name="masivo-braze-sync")
    except psycopg.OperationalError as exc:
        # the libpq message can hold the host and user but never the password; one line for the operator
        why = " ".join(str(exc).split())
        if is_transient(exc):
            raise DatabaseUnavailable(
                f"Postgres at {redact_url(url)} did not accept a connection in {retry.attempts} attempts "
                f"(down, restarting or unreachable; runs resume once it is back): {why}"
            ) from exc
        raise ConfigurationError(f"cannot connect to Postgres at {redact_url(url)}: {why}") from exc
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


@dataclass(frozen=True)
class PoolSettings:
    """The per-process pool of sessions `Database.connection()` draws from.

    A batch takes ~20 short sessions (ledger blocks, flushes, the commit); a new Postgres session
    costs a backend fork and an authentication, a pooled one a round trip to check it is alive.
    """

    #: sessions kept per process and URL; more callers at once wait for one to come back
    max_size: int = 12
    #: how long a caller waits for a pooled session before connecting on its own; the direct
    #: connection retries and names the cause (Postgres away, a refused login)
    wait_seconds: float = 2.0
    #: an idle session is closed after this long, so an idle worker holds none
    max_idle_seconds: float = 60.0
    #: how long the pool keeps reconnecting in the background after a failure
    reconnect_seconds: float = 20.0


POOL = PoolSettings()

_pools_lock = threading.Lock()
_pools: dict[tuple[int, str], ConnectionPool] = {}


def _reset(conn: psycopg.Connection) -> None:
    # a caller may have asked for autocommit; the next one expects a transaction
    if conn.autocommit:
        conn.autocommit = False


def _pool_for(url: str, settings: PoolSettings) -> ConnectionPool:
    """The process's pool for `url`, opened on first use. Keyed by pid too: a forked child must
    never use its parent's sessions."""
    key = (os.getpid(), url)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                url,
                kwargs={"application_name": "masivo-braze-sync"},
                min_size=0,
                max_size=settings.max_size,
                reset=_reset,
                max_idle=settings.max_idle_seconds,
                reconnect_timeout=settings.reconnect_seconds,
                num_workers=1,
                name="masivo-braze-sync",
                open=True,
            )
            _pools[key] = pool
        return pool


def _close_pool(url: str) -> None:
    with _pools_lock:
        pool = _pools.pop((os.getpid(), url), None)
    if pool is not None:
        pool.close(timeout=5)


@dataclass
class Database:
    """Connection factory for one database URL, shared by a process's pipeline code.

    `connection()` hands out pooled sessions (one pool per process and URL, shared by every
    `Database` of that URL). Sessions that hold state beyond a transaction never come from it:
    the per-(entity, account) advisory lock and live mode's LISTEN each open their own (`connect`).
    """

    url: str
    connect_retry: ConnectRetry = CONNECT_RETRY
    pool: PoolSettings = POOL
    _engine: sa.Engine | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Database:
        """The database the settings point at (starting the embedded one if needed)."""
        return cls(resolve_database_url(settings))

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection; without autocommit, commits on success and rolls back on error.

        Raises:
            DatabaseUnavailable: Postgres did not accept a connection within the retries.
            ConfigurationError: Postgres refused the connection for its settings.
        """
        pool = _pool_for(self.url, self.pool)
        conn = self._pooled(pool)
        if conn is None:
            # no live pooled session in time (Postgres away, refusing us, or every session busy):
            # a direct connection retries with backoff and raises the specific error
            conn = connect(self.url, autocommit=autocommit, retry=self.connect_retry)
            try:
                with conn:
                    yield conn
            finally:
                conn.close()
            return
        try:
            if autocommit:
                conn.autocommit = True
            with conn:  # commits or rolls back; a pooled connection is not closed by it
                yield conn
        finally:
            pool.putconn(conn)  # a broken session is discarded, an open transaction rolled back

    def _pooled(self, pool: ConnectionPool) -> psycopg.Connection | None:
        """A live session from the pool, or None. Each is checked with an empty query before use
        (one round trip): a Postgres restart leaves the pool's idle sessions dead, and those are
        dropped with all their idle siblings rather than handed out."""
        for _ in range(2):
            try:
                conn = pool.getconn(timeout=self.pool.wait_seconds)
            except PoolTimeout:
                return None
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.Error:
                pool.putconn(conn)  # broken: discarded
                pool.drain()  # the idle ones died with it
                continue
            return conn
        return None

    @property
    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine on psycopg 3 (sqlmodel, Alembic)."""
        if self._engine is None:
            # connections come from `connect`, so migrations ride out an outage the same way
            self._engine = sa.create_engine(
                "postgresql+psycopg://", creator=lambda: connect(self.url, retry=self.connect_retry), pool_pre_ping=True
            )
        return self._engine

    def dispose(self) -> None:
        """Close pooled connections: SQLAlchemy's and the process's pool for this URL."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        _close_pool(self.url)
