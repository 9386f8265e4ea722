"""One Braze rate budget per workspace across processes, held by Prefect global concurrency limits.

Each workspace and bucket (track, delete) gets a decaying global limit named for the accounts
configured with it and its rate (`tasks/limit_names.py`: `braze-acme-track-3000-per-3s-1a2b3c4d`),
created or updated on a run's first use (`upsert_global_concurrency_limit_by_name` is idempotent).
That first use also deletes the limits the new one replaces (a changed key, endpoint or rate),
when nobody holds slots on them. Slots are taken a block at a time with `rate_limit` (one
acquisition is a round trip to the Prefect server, ~44 ms here, so never per request); inside a
block the in-process pacer spreads the requests out. A limit that disappears under a running sync
(deleted by an operator or by another run's clean-up) is created again and the sync goes on.
Without a Prefect server (`PREFECT_API_URL` unset: the ephemeral API lives and dies with this
process) there is nobody to share with, and the in-process pacer alone applies.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, rate_limit
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from masivo_braze_sync.accounts import AccountConfig, load_accounts
from masivo_braze_sync.braze.ratelimit import workspace_key
from masivo_braze_sync.budget import SharedBudget, budget_shape
from masivo_braze_sync.db import Database
from masivo_braze_sync.errors import ConfigurationError
from masivo_braze_sync.settings import get_settings
from tasks.limit_names import PREFIX, LimitPlan, active_slots_now, plan_limit, superseded
from tasks.secrets import resolve_api_key, secret_block_name

log = logging.getLogger(__name__)

#: times a take re-creates its limit after finding it gone before it gives up (someone keeps
#: deleting it: failing loudly beats sending unthrottled)
RECREATE_ATTEMPTS = 3

#: a superseded limit is deleted only when its slots decayed this long ago (clocks of the server
#: and of this process may differ a little)
IDLE_MARGIN_SECONDS = 2.0

#: limits read per page when looking for superseded ones
_PAGE = 200


async def workspace_accounts(workspace: str) -> list[AccountConfig]:
    """The configured accounts whose endpoint and key are `workspace` (keys in Secret blocks are
    loaded, each block once; a block that cannot be loaded counts as another workspace)."""
    db = Database.from_settings()

    def load() -> list[AccountConfig]:
        with db.connection() as conn:
            return load_accounts(conn)

    endpoint = workspace.rpartition("#")[0]
    found: list[AccountConfig] = []
    by_block: dict[str, str | None] = {}
    for account in await asyncio.to_thread(load):
        if workspace_key(account.rest_endpoint or "", "").rpartition("#")[0] != endpoint:
            continue  # another endpoint: another workspace, no key to load
        block = secret_block_name(account.api_key)
        if block is None:
            if account.workspace == workspace:
                found.append(account)
            continue
        if block not in by_block:
            try:
                by_block[block] = (await resolve_api_key(account)).workspace
            except ConfigurationError:
                by_block[block] = None
        if by_block[block] == workspace:
            found.append(account)
    return found


class PrefectRateBudget:
    """A `SharedBudget` backed by a decaying Prefect global concurrency limit.

    The limit is worked out on the first `take` (which accounts share the workspace, the name,
    the rate), so building the budget costs nothing when the run never sends to its bucket.
    """

    def __init__(self, workspace: str, bucket: str, limit: int, window_seconds: float) -> None:
        self.workspace = workspace
        self.bucket = bucket
        #: the most slots a caller takes at once (its own rate's shape: the shared limit's may be smaller)
        self.slots = budget_shape(limit, window_seconds)[0]
        self._fallback = (limit, window_seconds)
        self.plan: LimitPlan | None = None
        self._limit_slots = self.slots
        self._decay = 0.0
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str | None:
        """The limit's name, once the first `take` has worked it out."""
        return None if self.plan is None else self.plan.name

    async def _ensure(self) -> LimitPlan:
        async with self._lock:
            if self.plan is None:
                sharers = await workspace_accounts(self.workspace)
                plan = plan_limit(self.workspace, self.bucket, sharers, get_settings(), self._fallback)
                self._limit_slots, self._decay = budget_shape(plan.limit, plan.window_seconds)
                await self._upsert(plan.name)
                await self._remove_superseded(plan, [a.account_id for a in sharers])
                self.plan = plan
            return self.plan

    async def _upsert(self, name: str) -> None:
        # upsert, not create: the same name with another shape (`budget_shape` changed) is updated
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(
                name, self._limit_slots, slot_decay_per_second=self._decay
            )

    async def _remove_superseded(self, plan: LimitPlan, sharer_ids: list[str]) -> None:
        """Delete the limits `plan` replaces that nobody holds slots on; one still in use (a run
        started before the change) is left for a later run to delete."""
        async with get_client() as client:
            limits, offset = [], 0
            while True:
                page = await client.read_global_concurrency_limits(limit=_PAGE, offset=offset)
                limits += [gcl for gcl in page if gcl.name.startswith(PREFIX)]
                if len(page) < _PAGE:
                    break
                offset += _PAGE
            by_name = {gcl.name: gcl for gcl in limits}
            now = datetime.now(UTC)
            for name in superseded(plan, self.workspace, sharer_ids, by_name):
                gcl = by_name[name]
                since = (now - gcl.updated).total_seconds() - IDLE_MARGIN_SECONDS if gcl.updated else 0.0
                if active_slots_now(gcl.active_slots, gcl.slot_decay_per_second, since) > 0:
                    log.info("rate limit %s is superseded by %s but still in use; kept for now", name, plan.name)
                    continue
                try:
                    await client.delete_global_concurrency_limit_by_name(name)
                except ObjectNotFound:
                    continue  # another run deleted it first
                log.info("deleted rate limit %s, superseded by %s (%s)", name, plan.name, plan.rate)

    async def take(self, n: int) -> None:
        """Wait for `n` slots, in pieces no larger than the limit (a larger one could never fit)."""
        await self._ensure()
        while n > 0:
            k = min(n, self._limit_slots)
            await self._acquire(k)
            n -= k

    async def _acquire(self, k: int) -> None:
        for attempt in range(RECREATE_ATTEMPTS + 1):
            try:
                # strict: a missing limit must never mean running unthrottled
                await rate_limit(self.plan.name, occupy=k, strict=True)
                return
            except ConcurrencySlotAcquisitionError:
                if attempt == RECREATE_ATTEMPTS or await self._exists():
                    raise
                log.warning("rate limit %s disappeared; creating it again", self.plan.name)
                await self._upsert(self.plan.name)

    async def _exists(self) -> bool:
        async with get_client() as client:
            try:
                await client.read_global_concurrency_limit_by_name(self.plan.name)
            except ObjectNotFound:
                return False
        return True


def shared_server_configured() -> bool:
    """Whether a Prefect server outlives this process (so other processes can share budgets)."""
    return bool(get_current_settings().api.url)


def prefect_budget(workspace: str, bucket: str, limit: int, window_seconds: float) -> SharedBudget:
    """The budget factory `AccountRun` takes when a Prefect server is configured."""
    return PrefectRateBudget(workspace, bucket, limit, window_seconds)
