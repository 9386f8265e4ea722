"""Helpers shared by tests that read the change log or compare revenue (imported, not collected)."""

from __future__ import annotations

import time
from decimal import Decimal

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
