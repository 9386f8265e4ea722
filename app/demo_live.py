"""The demo's live part: live mode in this process, a few changes, and how long each took to arrive.

After the batch runs, a `LiveSession` (the core's, no Prefect) follows the demo accounts; the demo
commits a new customer and then its first event, a purchase and a customer update, each in its own
transaction, and reads the emulator's arrival times (`EmulatorState.arrivals`) to print commit →
Braze for each. Then it stops the session as Ctrl-C would: batches in flight finish, runs close.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from masivo_braze_sync.db import Database
from masivo_braze_sync.emulator import EmulatorState
from masivo_braze_sync.live import LiveSession

#: generous: on an idle machine a change arrives in a few hundred ms (docs/live.md#latency-to-expect)
ARRIVAL_TIMEOUT_SECONDS = 30.0


@dataclass
class LiveChange:
    """One change the demo commits, and how to recognise its object among the emulator's arrivals."""

    what: str
    write: Callable[[Database], None]
    array: str
    matches: Callable[[dict], bool]
    started_at: float = 0.0
    committed_at: float = 0.0
    arrived_at: float | None = None


def demo_changes(account_id: str) -> list[LiveChange]:
    """A new customer and its first event (separate transactions), a purchase, a customer update."""
    new = f"{account_id}-live-1"
    order = f"{account_id}-live-o1"
    updated = f"{account_id}-c30"

    def add_customer(db: Database) -> None:
        with db.connection() as conn:
            conn.execute(
                "INSERT INTO public.customers (account_id, id, email, first_name, country, tier) "
                "VALUES (%s, %s, 'live1@example.com', 'Live', 'CO', 'SILVER')",
                (account_id, new),
            )

    def add_event(db: Database) -> None:
        with db.connection() as conn:
            conn.execute(
                "INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at) "
                "VALUES (%s, %s, %s, 'STORE_VISIT', '{\"channel\": \"app\"}', now())",
                (f"{account_id}-live-e1", account_id, new),
            )

    def add_purchase(db: Database) -> None:
        with db.connection() as conn:
            conn.execute(
                "INSERT INTO public.orders (account_id, id, customer_id, status, fulfilled_at) "
                "VALUES (%s, %s, %s, 'FULFILLED', now())",
                (account_id, order, f"{account_id}-c5"),
            )
            conn.execute(
                "INSERT INTO public.order_items (account_id, order_id, line_no, sku, name, quantity, unit_price) "
                "VALUES (%s, %s, 1, 'SKU-LIVE', 'Live product', 1, 19.90)",
                (account_id, order),
            )

    def update_customer(db: Database) -> None:
        with db.connection() as conn:
            conn.execute(
                "UPDATE public.customers SET tier = 'DIAMOND', updated_at = now() WHERE account_id = %s AND id = %s",
                (account_id, updated),
            )

    return [
        LiveChange("new customer", add_customer, "attributes", lambda o: o.get("external_id") == new),
        LiveChange("its first event", add_event, "events", lambda o: o.get("external_id") == new),
        LiveChange(
            "a purchase", add_purchase, "purchases", lambda o: (o.get("properties") or {}).get("order_id") == order
        ),
        LiveChange("customer update", update_customer, "attributes", lambda o: o.get("external_id") == updated),
    ]


async def run_live_demo(console: Console, db: Database, state: EmulatorState, account_ids: tuple[str, ...]) -> bool:
    """Live mode over the demo accounts while a few changes commit; prints commit → Braze per change.

    Returns whether every change arrived."""
    session = LiveSession(db, account_ids=list(account_ids))
    stop = asyncio.Event()
    task = asyncio.create_task(session.run(stop), name="demo-live")
    try:
        await _until(lambda: session.sweeps >= 1 or task.done(), ARRIVAL_TIMEOUT_SECONDS)  # LISTEN + sweep
        if task.done():
            task.result()  # the session failed to start: raise its error
        account_id = account_ids[0]
        changes = demo_changes(account_id)
        for change in changes:
            change.started_at = time.time()
            await asyncio.to_thread(change.write, db)
            change.committed_at = time.time()  # the emulator stamps arrivals with the same clock
        await _until(lambda: _match_arrivals(state, account_id, changes), ARRIVAL_TIMEOUT_SECONDS)
    finally:
        stop.set()
        await task
    table = Table(title=f"Live mode ({account_id})", title_justify="left")
    table.add_column("change")
    table.add_column("commit → Braze, ms", justify="right")
    for change in changes:
        ms = "not arrived" if change.arrived_at is None else f"{1000 * (change.arrived_at - change.committed_at):,.0f}"
        table.add_row(change.what, ms)
    console.print(table)
    console.print("live mode stopped cleanly (batches in flight committed, locks released)")
    return all(c.arrived_at is not None for c in changes)


def _match_arrivals(state: EmulatorState, account_id: str, changes: list[LiveChange]) -> bool:
    """Fill in each change's first arrival after its commit; True once all have arrived."""
    arrivals = state.arrivals(account_id)
    for change in changes:
        if change.arrived_at is None:
            for at, array, obj in arrivals:  # its first object since the write began
                if at >= change.started_at and array == change.array and change.matches(obj):
                    change.arrived_at = at
                    break
    return all(c.arrived_at is not None for c in changes)


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
