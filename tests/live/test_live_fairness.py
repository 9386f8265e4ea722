"""One busy consumer of an account does not hold back the account's others (docs/live.md#order)."""

from __future__ import annotations

import threading
import time

import psycopg


def test_an_event_arrives_while_its_accounts_customers_keep_changing(
    make_account, add_events, received, live, database_url
):
    make_account("acct-1", customers=50)
    live()
    stop = threading.Event()

    def update_customers() -> None:  # a customer update commits every few ms: customers never run dry
        with psycopg.connect(database_url, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute(
                    "UPDATE customers SET points = %s WHERE account_id = 'acct-1' AND id = %s", (n, f"c{1 + n % 50}")
                )
                time.sleep(0.002)

    writer = threading.Thread(target=update_customers, daemon=True)
    writer.start()
    try:
        time.sleep(1.0)  # the customers consumer is busy now
        ids = add_events("acct-1", 3, customer="c1")
        deadline = time.monotonic() + 20
        while not set(received("acct-1")) >= set(ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        arrived_while_busy = set(received("acct-1")) >= set(ids) and writer.is_alive()
    finally:
        stop.set()
        writer.join(10)
    assert arrived_while_busy, "the events waited for the customers to stop changing"
