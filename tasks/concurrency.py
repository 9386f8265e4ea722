"""One Braze rate budget per workspace across processes, held by Prefect global concurrency limits.

Each workspace and bucket (track, delete) gets a decaying global limit, created on demand
(`upsert_global_concurrency_limit_by_name` is idempotent) and named from a digest of the
workspace key: never the API key itself. Slots are taken a block at a time with `rate_limit`
(one acquisition is a round trip to the Prefect server, ~44 ms here, so never per request);
inside a block the in-process pacer spreads the requests out. Without a Prefect server
(`PREFECT_API_URL` unset: the ephemeral API lives and dies with this process) there is nobody to
share with, and the in-process pacer alone applies.
"""

from __future__ import annotations

import hashlib

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit
from prefect.settings import get_current_settings

from masivo_braze_sync.budget import SharedBudget, budget_shape

_created: set[str] = set()


def limit_name(workspace: str, bucket: str) -> str:
    """The global limit's name for a workspace and bucket (no key material in it)."""
    return f"braze-{bucket}-{hashlib.sha256(workspace.encode()).hexdigest()[:16]}"


class PrefectRateBudget:
    """A `SharedBudget` backed by a decaying Prefect global concurrency limit."""

    def __init__(self, name: str, slots: int, decay: float) -> None:
        self.name = name
        self.slots = slots
        self.decay = decay

    async def _ensure(self) -> None:
        if self.name not in _created:
            async with get_client() as client:
                await client.upsert_global_concurrency_limit_by_name(
                    self.name, self.slots, slot_decay_per_second=self.decay
                )
            _created.add(self.name)

    async def take(self, n: int) -> None:
        """Wait for `n` slots, in pieces no larger than the limit (a larger one could never fit)."""
        await self._ensure()
        while n > 0:
            k = min(n, self.slots)
            # strict: a missing limit must fail loudly, never run unthrottled
            await rate_limit(self.name, occupy=k, strict=True)
            n -= k


def shared_server_configured() -> bool:
    """Whether a Prefect server outlives this process (so other processes can share budgets)."""
    return bool(get_current_settings().api.url)


def prefect_budget(workspace: str, bucket: str, limit: int, window_seconds: float) -> SharedBudget:
    """The budget factory `AccountRun` takes when a Prefect server is configured."""
    slots, decay = budget_shape(limit, window_seconds)
    return PrefectRateBudget(limit_name(workspace, bucket), slots, decay)
