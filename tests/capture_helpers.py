"""Helpers shared by tests that read the change log or compare revenue (imported, not collected)."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import psycopg

from masivo_braze_sync.db import Database


def settle(db: Database, account: str | None = None, timeout: float = 30.0) -> None:
    """Wait until every change so far (of `account`, or of all) is below the capture horizon.

    Other sessions on the same server may hold transactions open; that only delays changes, but a
    test that syncs once must see the whole history so far.
    """
    deadline = time.monotonic() + timeout
    where = "" if account is None else "account_id = %s AND "
    while True:
        with db.connection() as conn:
            waiting = conn.execute(
                f"SELECT count(*) FROM braze_sync.change_log "
                f"WHERE {where}txid >= pg_snapshot_xmin(pg_current_snapshot())",
                () if account is None else (account,),
            ).fetchone()[0]
        if not waiting:
            return
        assert time.monotonic() < deadline, "the change log did not settle"
        time.sleep(0.05)


def masivo_revenue(db: Database, account: str) -> dict[str, Decimal]:
    """Fulfilled revenue per customer in Masivo's tables."""
    with db.connection() as conn:
        return dict(
            conn.execute(
                "SELECT o.customer_id, sum(i.unit_price * i.quantity) FROM orders o "
                "JOIN order_items i ON i.account_id = o.account_id AND i.order_id = o.id "
                "WHERE o.account_id = %s AND o.status = 'FULFILLED' GROUP BY o.customer_id",
                (account,),
            ).fetchall()
        )


def braze_revenue(emulator, account: str) -> dict[str, Decimal]:
    """Purchase revenue per customer the emulator holds for a workspace."""
    return {
        cid: sum((Decimal(repr(p["price"])) * p["quantity"] for p in profile.purchases), Decimal(0))
        for cid, profile in emulator.profiles(account).items()
    }


class Writers:
    """Writers inserting events in transactions held open for random times, some rolled back.

    `start()` runs `n` writer threads, each doing `transactions` transactions; `join()` waits for
    them. `committed` and `rolled_back` list the event ids of each outcome. An `updated_at` or id
    watermark would skip the rows of a transaction that commits after a later one was read.
    """

    def __init__(
        self,
        database_url: str,
        account: str,
        *,
        n: int = 6,
        transactions: int = 6,
        holds: tuple[float, ...] = (0.005, 0.05, 0.3, 1.0, 2.0),
    ) -> None:
        self.database_url, self.account, self.transactions, self.holds = database_url, account, transactions, holds
        self.committed: list[str] = []
        self.rolled_back: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._write, args=(i,)) for i in range(n)]

    def start(self) -> Writers:
        """Start every writer."""
        for t in self._threads:
            t.start()
        return self

    def alive(self) -> bool:
        """Whether any writer is still writing."""
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        """Wait for every writer to finish."""
        for t in self._threads:
            t.join()

    def _write(self, n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(self.database_url) as conn:
            for txn in range(self.transactions):
                ids = [f"w{n}-t{txn}-e{i}" for i in range(rng.randint(1, 30))]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO events (id, account_id, customer_id, type, properties, occurred_at) "
                        "VALUES (%s, %s, %s, 'VISIT', jsonb_build_object('eid', %s::text), now())",
                        [(i, self.account, f"c{1 + rng.randrange(5)}", i) for i in ids],
                    )
                time.sleep(rng.choice(self.holds))  # hold the transaction open
                if rng.random() < 0.2:
                    conn.rollback()
                    with self._lock:
                        self.rolled_back.extend(ids)
                else:
                    conn.commit()
                    with self._lock:
                        self.committed.extend(ids)
