"""Extract: read the rows behind one log range into polars, through ADBC.

ADBC (adbc-driver-postgresql) is the reader: about 450k rows/s here, it accepts the password-less
and socket URLs that trust-auth and the embedded Postgres use (connectorx refuses them), and it
binds parameters, so account ids are never spliced into SQL. Reads are bounded by the batch's
log range (`Settings.batch_rows`), so memory stays flat however large the backlog.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import pyarrow as pa

from masivo_braze_sync.capture import LogRange

#: idle ADBC connections per process and URL, shared by every thread: ADBC connections are not
#: thread-safe, so each read takes one for itself and gives it back; a new one costs a session
#: (a backend fork and an authentication), and asyncio's worker threads come and go with each
#: event loop (every flow run has its own)
_idle: dict[tuple[int, str], list[adbc.Connection]] = {}
_idle_lock = threading.Lock()
#: idle connections kept per URL; more concurrent reads open their own and close them after
KEEP_IDLE = 4
#: for this reader's sessions only: holds a batch's sort in memory
WORK_MEM = "64MB"
#: threads for the second half of split reads (`read_parts`); the first half runs in the caller's
#: thread, so a busy pool only makes a split read serial, never stuck
_parts = ThreadPoolExecutor(max_workers=8, thread_name_prefix="masivo-read")


def _open(url: str) -> adbc.Connection:
    conn = adbc.connect(url, autocommit=True)
    try:
        with contextlib.closing(conn.cursor()) as cur:
            # a batch's rows are sorted in change order by the server: at the default 4 MB the
            # sort of a 20,000-row batch spills to disk (EXPLAIN: "external merge"), ~10% of a read
            cur.execute(f"SET work_mem = '{WORK_MEM}'")
    except Exception:
        conn.close()
        raise
    return conn


def _take(url: str) -> tuple[adbc.Connection, bool]:
    """An idle connection (reused=True) or a new one."""
    with _idle_lock:
        conns = _idle.get((os.getpid(), url))
        if conns:
            return conns.pop(), True
    return _open(url), False


def _give_back(url: str, conn: adbc.Connection) -> None:
    with _idle_lock:
        conns = _idle.setdefault((os.getpid(), url), [])
        if len(conns) < KEEP_IDLE:
            conns.append(conn)
            return
    conn.close()


def read_frame(url: str, query: str, parameters: tuple) -> pl.DataFrame:
    """Run `query` ($1, $2 ... placeholders) and return the result as a polars frame."""
    conn, reused = _take(url)
    try:
        frame = _read(conn, query, parameters)
    except Exception:
        # a broken connection (server restart) must not poison the next read
        with contextlib.suppress(Exception):  # already failing: the original error matters
            conn.close()
        if not reused:
            raise
        # the connection kept from an earlier read may have died since (a server restart): a
        # read has no side effects, so it is tried once more on a fresh connection
        conn = _open(url)
        try:
            frame = _read(conn, query, parameters)
        except Exception:
            with contextlib.suppress(Exception):
                conn.close()
            raise
    _give_back(url, conn)
    return frame


def _read(conn: adbc.Connection, query: str, parameters: tuple) -> pl.DataFrame:
    # the driver's cursor straight to Arrow: `pl.read_database` does the same, but first asks
    # whether the connection is SQLAlchemy's, which imports SQLAlchemy's ORM on a process's
    # first read (~1 s here, with the import lock held: every account's first read waited)
    with contextlib.closing(conn.cursor()) as cur:
        cur.execute(query, parameters)
        return _frame(cur.fetch_arrow_table())


def _frame(table: pa.Table) -> pl.DataFrame:
    """The driver's table as a polars frame, `xid8` columns as UInt64.

    The driver passes a type it does not know, such as `xid8`, as its binary wire value wrapped in
    an opaque extension type, which polars cannot sort or cast; `xid8`'s is 8 bytes, big-endian
    (Postgres' `xid8send`). Decoding it here costs ~0.3 ms per 20,000 rows, where casting it on the
    server (`txid::text::bigint`) cost ~8 ms of the read.
    """
    xids = [
        field.name
        for field in table.schema
        if getattr(field.type, "extension_name", None) == "arrow.opaque" and field.type.type_name == "xid8"
    ]
    if not xids:
        return pl.from_arrow(table)
    decoded = [
        pl.Series(
            name, pa.chunked_array([c.storage for c in table.column(name).chunks], type=pa.binary())
        ).bin.reinterpret(dtype=pl.UInt64, endianness="big")
        for name in xids
    ]
    frame = pl.from_arrow(table.drop_columns(xids)).with_columns(decoded)
    return frame.select(table.column_names)


def first_per_key(frame: pl.DataFrame) -> pl.DataFrame:
    """Each key's first row of a frame of change-log rows (`key`, `log_txid`, `log_id`, ...), in change
    order, numbered: `key`, `log_ord` (the 1-based rank of the key's first log row among all the
    range's rows), then the frame's other columns.

    Numbering and grouping the log in SQL was about a fifth of a read (a window over the range and a
    hash aggregate by key before the joins); here it is a sort of two integer columns and a hash of
    the keys. A key's rows carry the same joined columns (they join on the key), so which of them is
    kept only decides `log_ord`.
    """
    order = frame.select(pl.arg_sort_by("log_txid", "log_id")).to_series()
    first = frame.get_column("key").gather(order).is_first_distinct()
    rows = order.filter(first)
    ranks = pl.int_range(1, frame.height + 1, dtype=pl.Int64, eager=True).filter(first)
    # the rows usually come in change order with no key twice: then nothing is copied
    if not rows.equals(pl.int_range(0, frame.height, dtype=rows.dtype, eager=True)):
        frame = frame[rows]
    return frame.select("key", ranks.alias("log_ord"), pl.exclude("key", "log_txid", "log_id"))


def _range_parameters(account_id: str, log_range: LogRange) -> tuple:
    r = log_range
    after, upto = (str(r.after.txid), r.after.log_id), (str(r.upto.txid), r.upto.log_id)
    return (account_id, *after, *upto, r.slice.count, r.slice.index)


def read_range(url: str, query: str, *, account_id: str, log_range: LogRange) -> pl.DataFrame:
    """Read an entity query over `(after, upto]`: parameters $1 account, $2/$3 after, $4/$5 upto,
    $6/$7 the range's slice (count, index)."""
    return read_frame(url, query, _range_parameters(account_id, log_range))


def read_parts(url: str, query: str, *, account_id: str, log_range: LogRange, parts: list[int]) -> list[pl.DataFrame]:
    """`read_range` once per value of $8 in `parts`, each on its own connection, all at once.

    ADBC runs the query and decodes its rows without holding the GIL, so the parts' server work
    and decoding overlap; the frames come back in the order of `parts`.
    """
    params = _range_parameters(account_id, log_range)
    later = [_parts.submit(read_frame, url, query, (*params, part)) for part in parts[1:]]
    first = read_frame(url, query, (*params, parts[0]))
    return [first, *(f.result() for f in later)]
