"""`masivo-braze demo`: the whole pipeline on embedded defaults, in one command.

Embedded Postgres (unless MASIVO_DATABASE_URL is set), Prefect's ephemeral API (unless
PREFECT_API_URL is set) and the Braze emulator in this process. It seeds three demo accounts,
syncs them, prints the per-account summary and what the emulator received, then changes a few
customers and syncs again: only what changed is sent, and nothing twice. Last, live mode runs in
this process while a few changes commit, and the demo prints how long each took to reach the
emulator (app/demo_live.py).
"""

from __future__ import annotations

import asyncio
import os

from rich.console import Console
from rich.table import Table

from masivo_braze_sync.db import Database
from masivo_braze_sync.db.migrate import init_database
from masivo_braze_sync.db.models import SOURCE_TABLES
from masivo_braze_sync.errors import AccountSyncFailed
from masivo_braze_sync.settings import get_settings

DEMO_ACCOUNTS = ("demo-andes", "demo-caribe", "demo-pampa")
CUSTOMERS_PER_ACCOUNT = 500


def reset_accounts(db: Database, account_ids: tuple[str, ...]) -> None:
    """Remove the accounts' source rows and sync state (demo and tests only)."""
    ids = list(account_ids)
    with db.connection() as conn:
        for table in reversed(SOURCE_TABLES):  # models.py lists them parents first
            column = "account_id" if "account_id" in table.c else "id"  # `accounts` itself
            conn.execute(f"DELETE FROM public.{table.name} WHERE {column} = ANY(%s)", (ids,))
        sync_tables = conn.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'braze_sync' AND column_name = 'account_id'"
        ).fetchall()
        for (t,) in sync_tables:
            conn.execute(f"DELETE FROM braze_sync.{t} WHERE account_id = ANY(%s)", (ids,))


def seed_account(db: Database, account_id: str, *, endpoint: str, api_key: str, customers: int, events: int) -> None:
    """One account with customers (one soft-deleted) and a mix of events, some internal or bad."""
    with db.connection() as conn:
        conn.execute("INSERT INTO public.accounts (id, name) VALUES (%s, %s)", (account_id, account_id.title()))
        conn.execute(
            "INSERT INTO public.braze_integrations (account_id, api_key, rest_endpoint) VALUES (%s, %s, %s)",
            (account_id, api_key, endpoint),
        )
        conn.execute(
            """
            INSERT INTO public.customers (account_id, id, email, first_name, country, tier, points)
            SELECT %(a)s::text, %(a)s::text || '-c' || g, 'member' || g || '@example.com', 'Member ' || g, 'CO',
                   (ARRAY['SILVER', 'GOLD', 'PLATINUM'])[1 + g %% 3], g * 10
            FROM generate_series(1, %(n)s) g
            """,
            {"a": account_id, "n": customers},
        )
        conn.execute(
            """
            INSERT INTO public.events (id, account_id, customer_id, type, properties, occurred_at)
            SELECT %(a)s::text || '-e' || g, %(a)s::text, %(a)s::text || '-c' || (1 + g %% %(n)s),
                   (ARRAY['STORE_VISIT', 'PRODUCT_VIEWED', 'REFERRAL_SENT', 'REGISTRATION', 'REDEEM_COUPON'])
                       [1 + g %% 5],
                   CASE WHEN g %% 97 = 0
                        THEN jsonb_build_object('note', repeat('x', 300))          -- too long: rejected
                        ELSE jsonb_build_object(
                            'store', jsonb_build_object('id', g %% 17, 'city', 'Bogotá'),
                            'channel', (ARRAY['app', 'web', 'pos'])[1 + g %% 3],
                            'items', jsonb_build_array(jsonb_build_object('sku', 'SKU-' || g %% 40, 'qty', 1 + g %% 3)),
                            '$source', 'masivo')
                   END,
                   now() - make_interval(secs => g)
            FROM generate_series(1, %(e)s) g
            """,
            {"a": account_id, "n": customers, "e": events},
        )
        conn.execute(  # orders: 2 lines each; two in three fulfilled, the rest pending
            """
            INSERT INTO public.orders (account_id, id, customer_id, status, fulfilled_at)
            SELECT %(a)s::text, %(a)s::text || '-o' || g, %(a)s::text || '-c' || (2 + g %% (%(n)s - 1)),
                   CASE WHEN g %% 3 = 0 THEN 'PENDING' ELSE 'FULFILLED' END,
                   CASE WHEN g %% 3 = 0 THEN NULL ELSE now() - make_interval(mins => g) END
            FROM generate_series(1, 200) g
            """,
            {"a": account_id, "n": customers},
        )
        conn.execute(
            """
            INSERT INTO public.order_items (account_id, order_id, line_no, sku, name, quantity, unit_price)
            SELECT %(a)s::text, %(a)s::text || '-o' || g, l, 'SKU-' || (g * l) %% 40, 'Product ' || (g * l) %% 40,
                   1 + g %% 3, 9.90 * l
            FROM generate_series(1, 200) g, generate_series(1, 2) l
            """,
            {"a": account_id},
        )
        conn.execute(
            "INSERT INTO public.audiences (account_id, id, name) VALUES (%s, 'vip', 'VIP Customers'), "
            "(%s, 'news', 'Newsletter')",
            (account_id, account_id),
        )
        conn.execute(
            """
            INSERT INTO public.audience_members (account_id, audience_id, customer_id)
            SELECT %(a)s::text, CASE WHEN g %% 2 = 0 THEN 'vip' ELSE 'news' END, %(a)s::text || '-c' || g
            FROM generate_series(2, 120) g
            """,
            {"a": account_id},
        )
        conn.execute(  # bad values: dropped per field with a recorded reason, the rest goes
            "UPDATE public.customers SET email = 'not-an-email', dob = '2999-01-01' WHERE account_id = %s AND id = %s",
            (account_id, f"{account_id}-c2"),
        )


def change_accounts(db: Database, account_ids: tuple[str, ...]) -> None:
    """Between two syncs: a customer leaves, ten change tier, four orders are refunded, a member
    leaves an audience, and one customer is touched without changing."""
    with db.connection() as conn:
        for account_id in account_ids:
            conn.execute(
                "UPDATE public.customers SET deleted_at = now() WHERE account_id = %s AND id = %s",
                (account_id, f"{account_id}-c1"),
            )
            conn.execute(
                "UPDATE public.customers SET tier = 'DIAMOND' WHERE account_id = %s AND id = ANY(%s)",
                (account_id, [f"{account_id}-c{i}" for i in range(3, 13)]),
            )
            conn.execute(  # refunds: sent again with negative prices
                "UPDATE public.orders SET status = 'REVERSED', reversed_at = now() "
                "WHERE account_id = %s AND id = ANY(%s)",
                (account_id, [f"{account_id}-o{i}" for i in (1, 2, 4, 5)]),
            )
            conn.execute(  # a member leaves an audience: its attribute is nulled
                "DELETE FROM public.audience_members WHERE account_id = %s AND customer_id = %s",
                (account_id, f"{account_id}-c4"),
            )
            conn.execute(  # touched, unchanged: must cost nothing
                "UPDATE public.customers SET updated_at = now() WHERE account_id = %s AND id = %s",
                (account_id, f"{account_id}-c20"),
            )


def run_demo(console: Console, *, events_per_account: int = 2_000) -> int:
    """Seed, sync, report; returns the process exit code."""
    from app.demo_live import run_live_demo
    from app.report import print_summaries
    from flows import FLOWS
    from masivo_braze_sync.emulator import EmulatorServer, EmulatorState, Workspace
    from masivo_braze_sync.summary import AccountSummary

    os.environ["MASIVO_BRAZE_ALLOW_LOCAL_ENDPOINTS"] = "1"  # this process talks to its own emulator
    get_settings.cache_clear()
    db = Database.from_settings()
    console.print(f"database: {'MASIVO_DATABASE_URL' if get_settings().database_url else 'embedded Postgres'}")
    init_database(db, source=True)
    state = EmulatorState()
    with EmulatorServer(state, host="127.0.0.1", port=0) as server:
        reset_accounts(db, DEMO_ACCOUNTS)
        for account_id in DEMO_ACCOUNTS:
            state.add_workspace(Workspace(name=account_id, api_key=f"{account_id}-key"))
            seed_account(
                db,
                account_id,
                endpoint=server.url,
                api_key=f"{account_id}-key",
                customers=CUSTOMERS_PER_ACCOUNT,
                events=events_per_account,
            )
        console.print(
            f"seeded {len(DEMO_ACCOUNTS)} accounts x {events_per_account:,} events; Braze emulator at {server.url}"
        )
        code = 0
        for n, attempt in enumerate(("first run", "second run: changes since the first")):
            if n:
                change_accounts(db, DEMO_ACCOUNTS)
            console.rule(attempt)
            for entity, sync in FLOWS.items():
                try:
                    summaries = [AccountSummary(**r) for r in asyncio.run(sync(account_ids=list(DEMO_ACCOUNTS)))]
                except AccountSyncFailed as exc:
                    summaries, code = exc.summaries, 1
                print_summaries(console, entity, summaries)
        table = Table(title="What the Braze emulator received", title_justify="left")
        for col in ("workspace", "requests", "profiles", "events", "purchases", "revenue", "deleted", "429s"):
            table.add_column(col, justify="left" if col == "workspace" else "right")
        for account_id in DEMO_ACCOUNTS:
            stats = state.stats(account_id)
            profiles = state.profiles(account_id)
            table.add_row(
                account_id,
                f"{stats.requests:,}",
                f"{len(profiles):,}",
                f"{sum(len(p.events) for p in profiles.values()):,}",
                f"{sum(len(p.purchases) for p in profiles.values()):,}",
                f"{sum(x['price'] * x.get('quantity', 1) for p in profiles.values() for x in p.purchases):,.2f}",
                f"{len(state.deleted_ids(account_id)):,}",
                f"{stats.rate_limited:,}",
            )
        console.print(table)
        console.rule("live mode: changes as they commit")
        if not asyncio.run(run_live_demo(console, db, state, DEMO_ACCOUNTS)):
            code = 1
    return code
