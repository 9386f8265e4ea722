"""The alerts shipped with the deployments: Prefect automations on the sync's events.

    uv run python deployments/automations.py [--notify BLOCK_TYPE/BLOCK_NAME]

Creates (or replaces, by name) three automations on PREFECT_API_URL's server; safe to run again
after every deploy. With `--notify`, each sends a notification through that Prefect notification
block (e.g. `slack-webhook/ops-alerts`, created in the UI under Blocks); without it they only
record that they fired (Automations and Events pages). What each means and what to do:
docs/operations.md#alerts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from masivo_braze_sync.signals import (  # after the checkout is importable
    ACCOUNT_RESOURCE,
    ENTITY_RESOURCE,
    ROWS_REJECTED,
    SYNC_COMPLETED,
    SYNC_FAILED,
)

#: the tag that marks the automations this script owns
TAG = "masivo-braze-sync"
#: an entity whose run has not reached its end for this long is alerted
STALE_AFTER = timedelta(minutes=15)

_WHO = "{{ event.resource['masivo.entity'] }} of account {{ event.resource['masivo.account'] }}"


def automations(notify: SendNotification | None = None) -> list[AutomationCore]:
    """The shipped automations; `notify` is the notification action to attach (None: record only)."""

    def actions(subject: str, body: str) -> list:
        return [notify.model_copy(update={"subject": subject, "body": body})] if notify else [DoNothing()]

    return [
        AutomationCore(
            name="masivo: account sync failing",
            description=(
                "An account's sync of an entity failed with a new error (once per account and error; "
                "repeats are ignored until the account has a successful run)."
            ),
            tags=[TAG],
            trigger=EventTrigger(
                expect={SYNC_FAILED},
                match={"prefect.resource.id": f"{ACCOUNT_RESOURCE}.*", "masivo.repeat": "false"},
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=actions(f"Braze sync failing: {_WHO}", f"{_WHO} failed: {{{{ event.payload.error }}}}"),
        ),
        AutomationCore(
            name="masivo: entity not synced",
            description=(
                f"No run of an entity reached its end for {STALE_AFTER.seconds // 60} minutes: workers "
                "down, schedule paused, or runs crashing."
            ),
            tags=[TAG],
            trigger=EventTrigger(
                expect={SYNC_COMPLETED},
                match={"prefect.resource.id": f"{ENTITY_RESOURCE}.*"},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=STALE_AFTER,
            ),
            actions=actions(
                "Braze sync stalled: {{ event.resource['masivo.entity'] }}",
                f"No sync of {{{{ event.resource['masivo.entity'] }}}} completed in {STALE_AFTER}.",
            ),
        ),
        AutomationCore(
            name="masivo: rows rejected",
            description="An account run rejected at least MASIVO_ALERT_REJECTED_ROWS rows.",
            tags=[TAG],
            trigger=EventTrigger(
                expect={ROWS_REJECTED},
                match={"prefect.resource.id": f"{ACCOUNT_RESOURCE}.*", "masivo.above-threshold": "true"},
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=actions(
                f"Braze sync rejected rows: {_WHO}",
                f"{_WHO}: {{{{ event.payload.rejected }}}} rows rejected "
                "(`masivo-braze rejected` lists them with the reason).",
            ),
        ),
    ]


async def install(notify_block: str | None = None) -> list[str]:
    """Create or replace the automations (matched by name); returns their names."""
    async with get_client() as client:
        notify = None
        if notify_block:
            slug, _, name = notify_block.partition("/")
            block = await client.read_block_document_by_name(name, block_type_slug=slug, include_secrets=False)
            notify = SendNotification(block_document_id=block.id, body="")
        names = []
        for automation in automations(notify):
            for old in await client.read_automations_by_name(automation.name):
                await client.delete_automation(old.id)
            await client.create_automation(automation)
            names.append(automation.name)
        return names


def main() -> None:
    """Command line: install the automations."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notify", metavar="BLOCK_TYPE/BLOCK_NAME", help="notification block, e.g. slack-webhook/ops")
    for name in asyncio.run(install(parser.parse_args().notify)):
        print(f"automation: {name}")


if __name__ == "__main__":
    main()
