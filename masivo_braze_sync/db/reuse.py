"""A `Database` that keeps a few idle connections for reuse (live mode).

A live micro-batch opens several short transactions (take the batch, record the requests, their
answers, the commit, the backlog check), and a new Postgres connection costs milliseconds of CPU
on both sides: on a small host that was a large share of a change's commit → Braze time
(docs/live.md#latency-to-expect). Connections are handed back only when idle and healthy; an
error on the connection drops it, and an `OperationalError` drops every idle one too (a restarted
server has ended them all).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg.pq import TransactionStatus

from masivo_braze_sync.db.engine import Database, connect


@dataclass
class ReusingDatabase(Database):
    """`Database.connection()` with the same semantics, on reused connections."""

    #: idle connections kept at most (more in use at once are opened and closed as usual)
    keep_idle: int = 8
    _idle: list[psycopg.Connection] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, db: Database) -> ReusingDatabase:
        """The same database, reusing connections (`db` itself when it already does)."""
        return db if isinstance(db, ReusingDatabase) else cls(db.url, db.connect_retry)

    @contextmanager
    def connection(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A psycopg connection; without autocommit, commits on success and rolls back on error."""
        conn = self._take()
        if conn is None:
            conn = connect(self.url, autocommit=autocommit, retry=self.connect_retry)
        elif conn.autocommit != autocommit:
            conn.autocommit = autocommit
        try:
            yield conn
            if not autocommit:
                conn.commit()
        except BaseException as exc:
            if isinstance(exc, psycopg.OperationalError):
                self.close_idle()  # the server may have restarted: the idle ones are gone too
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise
        finally:
            self._give_back(conn)

    def _take(self) -> psycopg.Connection | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
        if healthy:
            with self._lock:
                if len(self._idle) < self.keep_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def close_idle(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def dispose(self) -> None:
        """Close the idle connections and the SQLAlchemy pool."""
        self.close_idle()
        super().dispose()
