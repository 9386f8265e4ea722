"""Serve every deployment on its schedule from one process, without a work pool.

    uv run python deployments/serve.py

Runs against PREFECT_API_URL (a `prefect server start` or Prefect Cloud). Stopping the process does
not pause the schedules (`pause_on_shutdown=False`), so a restarting container keeps them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.audiences import resync_audience, sync_audiences
from flows.customers import sync_customers
from flows.events import sync_events
from flows.purchases import sync_purchases


def main() -> None:
    """Register the deployments and run their schedules until interrupted."""
    serve(
        sync_customers.to_deployment(name="sync-customers", cron="*/5 * * * *", concurrency_limit=1),
        sync_events.to_deployment(name="sync-events", cron="* * * * *", concurrency_limit=1),
        sync_purchases.to_deployment(name="sync-purchases", cron="* * * * *", concurrency_limit=1),
        sync_audiences.to_deployment(name="sync-audiences", cron="*/5 * * * *", concurrency_limit=1),
        resync_audience.to_deployment(name="resync-audience"),  # manual: account_id, audience_id
        pause_on_shutdown=False,
    )


if __name__ == "__main__":
    main()
