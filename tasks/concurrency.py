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
import time
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


#: how long a Secret block's workspace (endpoint and key digest) is reused when looking for the
#: accounts sharing a workspace: loading a block is a Prefect API call (~0.1 s), and every run of
#: a parent would otherwise load every other account's block again
SECRET_WORKSPACE_SECONDS = 300.0

#: Secret blocks loaded at once
_LOADS = 8

#: (block, endpoint) -> (monotonic time loaded, workspace key or None when it cannot be loaded);
#: digests only, never a key
_block_workspaces: dict[tuple[str, str], tuple[float, str | None]] = {}
#: the loads under way, by event loop, block and endpoint
_loading: dict[tuple[int, str, str], asyncio.Task] = {}


def _endpoint_part(rest_endpoint: str | None) -> str:
    """The endpoint half of a workspace key (as `workspace_key` normalises it)."""
    return workspace_key(rest_endpoint or "", "").rpartition("#")[0]


async def _block_workspace(account: AccountConfig, block: str, fresh: bool) -> str | None:
    key = (block, _endpoint_part(account.rest_endpoint))
    cached = _block_workspaces.get(key)
    if cached is not None and not fresh and time.monotonic() - cached[0] < SECRET_WORKSPACE_SECONDS:
        return cached[1]
    # one load per block at a time: the runs of a parent start together and would each load
    # every block (tasks are per event loop: the CLI runs each entity in its own loop)
    flight = (id(asyncio.get_running_loop()), *key)
    task = _loading.get(flight)
    if task is None:
        task = _loading[flight] = asyncio.create_task(_load_block_workspace(account, key))
        task.add_done_callback(lambda _: _loading.pop(flight, None))
    return await asyncio.shield(task)


async def _load_block_workspace(account: AccountConfig, key: tuple[str, str]) -> str | None:
    try:
        found: str | None = (await resolve_api_key(account)).workspace
    except ConfigurationError:
        found = None  # a missing or empty block: nobody sends with it
    _block_workspaces[key] = (time.monotonic(), found)
    return found


async def workspace_accounts(workspace: str) -> list[AccountConfig]:
    """The configured accounts whose endpoint and key are `workspace`.

    Keys in Secret blocks are compared through the block's workspace, loaded at most once per
    `SECRET_WORKSPACE_SECONDS` (all loaded again when none matches: the run's own block changed).
    A block that cannot be loaded counts as another workspace.
    """
    db = Database.from_settings()

    def load() -> list[AccountConfig]:
        with db.connection() as conn:
            return load_accounts(conn)

    endpoint = workspace.rpartition("#")[0]
    # another endpoint is another workspace: no key to compare, no block to load
    accounts = [a for a in await asyncio.to_thread(load) if _endpoint_part(a.rest_endpoint) == endpoint]
    found = [a for a in accounts if secret_block_name(a.api_key) is None and a.workspace == workspace]
    blocks: dict[str, list[AccountConfig]] = {}
    for a in accounts:
        if (block := secret_block_name(a.api_key)) is not None:
            blocks.setdefault(block, []).append(a)
    if not blocks:
        return found
    gate = asyncio.Semaphore(_LOADS)

    async def load_all(fresh: bool) -> list[AccountConfig]:
        async def one(block: str, users: list[AccountConfig]) -> list[AccountConfig]:
            async with gate:
                return users if await _block_workspace(users[0], block, fresh) == workspace else []

        groups = await asyncio.gather(*(one(b, users) for b, users in blocks.items()))
        return [a for users in groups for a in users]

    shared = await load_all(fresh=False)
    if not found and not shared:
        shared = await load_all(fresh=True)
    return sorted(found + shared, key=lambda a: a.account_id)


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
                try:
                    await self._remove_superseded(plan, [a.account_id for a in sharers])
                except Exception:  # tidying up: a later run tries again; the sync goes on
                    log.warning("could not delete the rate limits superseded by %s", plan.name, exc_info=True)
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
