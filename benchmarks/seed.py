"""Seeding the benchmark database: accounts pointed at the emulator, customers, events, orders.

Everything is generated in Postgres (`generate_series`), so seeding 2,000,000 events takes seconds,
and goes through the capture triggers like any Masivo write: the change log is the backlog the
pipeline then drains. The data mirrors the demo's shapes at scale:

- customers: email, name, country, tier, points, a nested `attributes` object and `tags`;
  1 in 100 soft-deleted (their events are skipped, never sent);
- events: 1 in 10 of an internal type (skipped), 1 in 500 with a property over 255 characters
  (rejected), the rest with nested properties (`store.id`, `items[0].sku`, ...) that flatten to
  about 8 keys, i.e. a request of 75 events is about 20 KB, like real loyalty traffic;
- orders: 9 in 10 fulfilled, two lines each (purchases).
"""

from __future__ import annotations

import psycopg

EVENT_TYPES = (
    "STORE_VISIT",
    "PRODUCT_VIEWED",
    "REFERRAL_SENT",
    "APP_OPEN",
    "SURVEY_COMPLETED",
    "CHECK_IN",
    "PROMO_CLICKED",
    "WISHLIST_ADDED",
    "REVIEW_POSTED",
    "REGISTRATION",  # internal: skipped
)
#: rows per INSERT statement (one transaction each): bounds the trigger's transition table
CHUNK = 250_000

CUSTOMERS_SQL = """
INSERT INTO public.customers (account_id, id, email, first_name, last_name, country, language, tier, points,
                              attributes, tags, deleted_at)
SELECT %(a)s::text, %(a)s::text || '-c' || g, 'member' || g || '@example.com', 'Member', 'N' || g, 'CO', 'es',
       (ARRAY['SILVER', 'GOLD', 'PLATINUM'])[1 + g %% 3], g %% 5000,
       jsonb_build_object('segment', (ARRAY['new', 'loyal', 'lapsed'])[1 + g %% 3],
                          'prefs', jsonb_build_object('sms', g %% 2 = 0, 'store', g %% 17)),
       jsonb_build_object('vip', g %% 10 = 0),
       CASE WHEN g %% 100 = 0 THEN now() END
FROM generate_series(%(lo)s::int, %(hi)s::int) g
"""

EVENTS_SQL = """
INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at)
SELECT %(a)s::text || '-e' || g, %(a)s::text, %(a)s::text || '-c' || (1 + (g::bigint * 7919) %% %(c)s::int),
       (%(types)s::text[])[1 + g %% 10],
       CASE WHEN g %% 500 = 0
            THEN jsonb_build_object('note', repeat('x', 300))
            ELSE jsonb_build_object(
                'store', jsonb_build_object('id', g %% 17, 'city', 'Bogotá'),
                'channel', (ARRAY['app', 'web', 'pos'])[1 + g %% 3],
                'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || g %% 40, 'qty', 1 + g %% 3)),
                'amount', (g %% 1000) / 10.0,
                'campaign', 'spring-' || g %% 12,
                '$source', 'masivo')
       END,
       now() - make_interval(secs => g)
FROM generate_series(%(lo)s::int, %(hi)s::int) g
"""

ORDERS_SQL = """
INSERT INTO public.orders (account_id, id, customer_id, status, currency, fulfilled_at)
SELECT %(a)s::text, %(a)s::text || '-o' || g, %(a)s::text || '-c' || (1 + (g::bigint * 31) %% %(c)s::int),
       CASE WHEN g %% 10 = 0 THEN 'PENDING' ELSE 'FULFILLED' END, 'COP',
       CASE WHEN g %% 10 = 0 THEN NULL ELSE now() - make_interval(secs => g) END
FROM generate_series(1, %(n)s::int) g
"""

ORDER_ITEMS_SQL = """
INSERT INTO public.order_items (account_id, order_id, line_no, sku, name, quantity, unit_price, properties)
SELECT %(a)s::text, %(a)s::text || '-o' || g, l, 'SKU-' || (g + l) %% 40, 'Product ' || (g + l) %% 40,
       1 + g %% 3, 1000 + (g %% 50) * 100, jsonb_build_object('color', (ARRAY['red', 'blue'])[l])
FROM generate_series(1, %(n)s::int) g CROSS JOIN generate_series(1, 2) l
"""


def _chunks(total: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + CHUNK - 1, total)) for lo in range(1, total + 1, CHUNK)]


def account_ids(n: int) -> list[str]:
    """The benchmark's account ids."""
    return [f"bench-{i}" for i in range(1, n + 1)]


def api_key(account_id: str) -> str:
    """The (fake) Braze REST key of an account's workspace in the emulator."""
    return f"{account_id}-key"


def seed(url: str, *, endpoint: str, accounts: int, customers: int, events: int, orders: int) -> dict[str, int]:
    """Seed `accounts` accounts sharing the totals evenly; returns the change-log rows per entity."""
    ids = account_ids(accounts)
    per = {"customers": customers // accounts, "events": events // accounts, "orders": orders // accounts}
    with psycopg.connect(url, autocommit=True) as conn:
        for a in ids:
            with conn.transaction():
                conn.execute("INSERT INTO public.accounts (id, name, currency) VALUES (%s, %s, 'COP')", (a, a))
                conn.execute(
                    "INSERT INTO public.braze_integrations (account_id, api_key, rest_endpoint) VALUES (%s, %s, %s)",
                    (a, api_key(a), endpoint),
                )
            for lo, hi in _chunks(per["customers"]):
                conn.execute(CUSTOMERS_SQL, {"a": a, "lo": lo, "hi": hi})
            for lo, hi in _chunks(per["events"]):
                conn.execute(
                    EVENTS_SQL, {"a": a, "lo": lo, "hi": hi, "c": max(1, per["customers"]), "types": list(EVENT_TYPES)}
                )
            if per["orders"]:
                with conn.transaction():
                    conn.execute(ORDERS_SQL, {"a": a, "n": per["orders"], "c": max(1, per["customers"])})
                    conn.execute(ORDER_ITEMS_SQL, {"a": a, "n": per["orders"]})
        # the backlog, kept aside: runs prune the log rows they consume, `reset_sync_state` puts them back
        conn.execute("CREATE SCHEMA bench")
        conn.execute("CREATE TABLE bench.change_log AS SELECT * FROM braze_sync.change_log")
        conn.execute("VACUUM ANALYZE")
        counts = dict(conn.execute("SELECT entity, count(*) FROM braze_sync.change_log GROUP BY entity").fetchall())
    return counts


def reset_sync_state(url: str) -> None:
    """Forget every delivery (cursors, batches, ledger, state) and restore the change log as seeded
    (same ids and transaction ids): the next run drains the same backlog again."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            f"braze_sync.{t}"
            for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'braze_sync' "
                "AND tablename NOT IN ('alembic_version', 'change_log')"
            )
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)}, braze_sync.change_log RESTART IDENTITY")
        conn.execute("INSERT INTO braze_sync.change_log SELECT * FROM bench.change_log")
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('braze_sync.change_log', 'id'), max(id)) FROM bench.change_log"
        )
        conn.execute("ANALYZE braze_sync.change_log")
