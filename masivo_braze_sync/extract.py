"""Extract: read the rows behind one log range into polars, through ADBC.

ADBC (adbc-driver-postgresql) is the reader: about 450k rows/s here, it accepts the password-less
and socket URLs that trust-auth and the embedded Postgres use (connectorx refuses them), and it
binds parameters, so account ids are never spliced into SQL. Reads are bounded by the batch's
log range (`Settings.batch_rows`), so memory stays flat however large the backlog.
"""

from __future__ import annotations

import contextlib
import threading

import adbc_driver_postgresql.dbapi as adbc
import polars as pl

from masivo_braze_sync.capture import LogRange

#: one ADBC connection per worker thread and URL, kept for the thread's life (the process's):
#: ADBC connections are not thread-safe, and asyncio's worker threads are reused by every batch
_local = threading.local()
#: for this reader's sessions only (one per thread): holds a batch's sort in memory
WORK_MEM = "64MB"


def _connection(url: str) -> adbc.Connection:
    # one ADBC connection per thread and URL: opening one costs a few ms, and a read reuses it
    conns: dict[str, adbc.Connection] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    conn = conns.get(url)
    if conn is None:
        conn = adbc.connect(url, autocommit=True)
        try:
            with contextlib.closing(conn.cursor()) as cur:
                # a batch's rows are sorted in change order by the server: at the default 4 MB the
                # sort of a 20,000-row batch spills to disk (EXPLAIN: "external merge"), ~10% of a read
                cur.execute(f"SET work_mem = '{WORK_MEM}'")
        except Exception:
            conn.close()
            raise
        conns[url] = conn
    return conn


def read_frame(url: str, query: str, parameters: tuple) -> pl.DataFrame:
    """Run `query` ($1, $2 ... placeholders) and return the result as a polars frame."""
    reused = url in (getattr(_local, "conns", None) or {})
    try:
        return _read(url, query, parameters)
    except Exception:
        if not reused:
            raise
    # the connection kept from an earlier read may have died since (a server restart): a read
    # has no side effects, so it is tried once more on a fresh connection
    return _read(url, query, parameters)


def _read(url: str, query: str, parameters: tuple) -> pl.DataFrame:
    try:
        # the driver's cursor straight to Arrow: `pl.read_database` does the same, but first asks
        # whether the connection is SQLAlchemy's, which imports SQLAlchemy's ORM on a process's
        # first read (~1 s here, with the import lock held: every account's first read waited)
        with contextlib.closing(_connection(url).cursor()) as cur:
            cur.execute(query, parameters)
            return pl.from_arrow(cur.fetch_arrow_table())
    except Exception:
        # a broken connection (server restart) must not poison the thread's next read
        conn = getattr(_local, "conns", {}).pop(url, None)
        if conn is not None:
            with contextlib.suppress(Exception):  # already failing: the original error matters
                conn.close()
        raise


def read_range(url: str, query: str, *, account_id: str, log_range: LogRange) -> pl.DataFrame:
    """Read an entity query over `(after, upto]`: parameters $1 account, $2/$3 after, $4/$5 upto."""
    r = log_range
    return read_frame(
        url,
        query,
        (account_id, str(r.after.txid), r.after.log_id, str(r.upto.txid), r.upto.log_id),
    )
