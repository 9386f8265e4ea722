"""Deliver: send a batch's requests concurrently under the workspace's pacer, recording each
answer in the ledger as it arrives.

Concurrency inside a batch is what reaches Braze's ~1,000 requests/s; the rate limiter inside the
client keeps it below the workspace's limit. Ledger writes are grouped (requests are marked
`sending` a block at a time, answers are flushed every `FLUSH_SECONDS`) so the database sees tens
of statements per second, not thousands; the duplicate window after a crash is at most the block
in flight. Database calls run in a worker thread so they never stall the event loop's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from masivo_braze_sync.batch import DELETE, RequestPlan
from masivo_braze_sync.budget import SharedBudget
from masivo_braze_sync.errors import AuthenticationError, ConfigurationError, PermanentError, RetryableError
from masivo_braze_sync.ledger import DeliveryOutcome, Ledger

FLUSH_SECONDS = 0.2


@dataclass
class DeliveryStats:
    """Counts of one batch's delivery: the summary's delivery counters (`summary.DELIVERY_COUNTERS`)."""

    requests: int = 0
    objects_sent: int = 0
    rejected: int = 0
    retries: int = 0
    rate_limited: int = 0
    possibly_duplicated: int = 0  # requests whose earlier attempt may have landed
    rejected_keys: set[str] = field(default_factory=set)  # objects Braze refused


def _error_reason(error: dict) -> str:
    # Braze's `type` is a fixed sentence or code (docs/braze.md#request-and-response-format), never the value it refused
    return f"Braze refused the object: {str(error.get('type', 'unknown error'))[:200]}"


async def deliver(
    client,
    ledger: Ledger,
    batch_id: int,
    plans: list[RequestPlan],
    delivery_ids: list[int],
    *,
    concurrency: int,
    on_progress: Callable[[int], None] | None = None,
    budgets: dict[str, SharedBudget] | None = None,
    stats: DeliveryStats | None = None,
) -> DeliveryStats:
    """Send `plans` (ledger rows `delivery_ids`), at most `concurrency` at a time.

    Raises the first ConfigurationError (401/403, bad endpoint) or RetryableError that survived the
    client's retries, after recording every answer received so far: the batch stays open and the
    next run resumes it. Per-object refusals (201 + errors, 400) are recorded, not raised.
    Counts go to `stats` when given, so a caller keeps those of a delivery that raised.
    """
    stats = stats if stats is not None else DeliveryStats()
    outcomes: list[DeliveryOutcome] = []
    rejects: list[tuple[str, str]] = []
    queue: asyncio.Queue[tuple[RequestPlan, int] | None] = asyncio.Queue()
    failure: list[BaseException] = []

    async def flush() -> None:
        if outcomes or rejects:
            batch_out, batch_rej = outcomes[:], rejects[:]
            outcomes.clear()
            rejects.clear()
            try:
                await asyncio.to_thread(ledger.record_outcomes, batch_out, batch_rej, batch_id)
            except Exception:  # not CancelledError: a cancelled write goes on in its thread
                # not written (the database went away for a moment): keep them for the next flush
                outcomes[:0] = batch_out
                rejects[:0] = batch_rej
                raise

    async def flusher() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            # a failed write is retried by the next flush; the last one (below) raises if it fails
            with contextlib.suppress(Exception):
                await flush()

    async def send(plan: RequestPlan, delivery_id: int) -> None:
        try:
            if plan.endpoint == DELETE:
                result = await client.delete(plan.arrays["external_ids"])
                errors: list[dict] = []
            else:
                result = await client.track(plan.body)
                errors = result.errors
            status, http_status = "delivered", result.status_code
        except AuthenticationError as exc:
            # 401/403: Braze applied nothing. Recorded as `refused`, the next attempt resends these
            # objects without counting them as possible duplicates (docs/operations.md#ledger),
            # unless an earlier attempt of this request may have landed (a timeout or 5xx before
            # the 401): then it stays `sending`, and the take-over counts it as a possible duplicate
            if not getattr(exc, "possibly_applied", False):
                outcomes.append(DeliveryOutcome(delivery_id, "refused", exc.status_code, 1, False))
            raise
        except PermanentError as exc:
            if exc.status_code is not None and 300 <= exc.status_code < 400:
                # a redirect says where the endpoint points, not what is wrong with these objects:
                # the account stops (its batch stays open) until the endpoint is fixed
                if not getattr(exc, "possibly_applied", False):  # else `sending`: see the 401 above
                    outcomes.append(DeliveryOutcome(delivery_id, "refused", exc.status_code, 1, False))
                raise ConfigurationError(str(exc)) from None
            # the request itself was refused: nothing in it was applied; record every object
            result, errors, status, http_status = None, exc.errors, "rejected", exc.status_code
            # a 5xx before the final 4xx may have been applied: the objects may be in Braze anyway
            stats.possibly_duplicated += int(getattr(exc, "possibly_applied", False))
            refused = {(e.get("input_array"), e.get("index")) for e in errors}
            for array, keys in plan.arrays.items():
                for i, key in enumerate(keys):
                    if (array, i) not in refused:
                        reason = f"Braze answered {exc.status_code} for the request carrying this object"
                        rejects.append((key, reason))
                        stats.rejected_keys.add(key)
            stats.rejected += plan.object_count - len(errors)
        refused_keys = set()
        for error in errors:
            key = plan.key_at(str(error.get("input_array")), int(error.get("index", -1)))
            if key is not None and key not in refused_keys:
                refused_keys.add(key)
                stats.rejected_keys.add(key)
                reason = _error_reason(error)
                rejects.append((key, reason))
        stats.requests += 1
        stats.rejected += len(refused_keys)
        if result is not None:
            stats.objects_sent += plan.object_count - len(refused_keys)
            stats.retries += result.retries
            stats.rate_limited += result.rate_limited
            stats.possibly_duplicated += int(result.possibly_duplicated)
        outcomes.append(
            DeliveryOutcome(
                delivery_id,
                status,
                http_status,
                result.attempts if result else 1,
                bool(result and result.possibly_duplicated),
            )
        )
        if on_progress:
            on_progress(1)

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            if failure:
                # drain: an account-level failure stops further sends; these never left
                outcomes.append(DeliveryOutcome(item[1], "unsent", None, 0, False))
                continue
            try:
                await send(*item)
            except (ConfigurationError, RetryableError) as exc:
                failure.append(exc)

    block = max(1, concurrency)
    flush_task = asyncio.create_task(flusher())
    workers = [asyncio.create_task(worker()) for _ in range(min(block, len(plans)))]
    try:
        for start in range(0, len(plans), block):
            if failure:
                break
            # keep at most ~2 blocks marked `sending` ahead of the answers: the duplicate window
            while queue.qsize() > block // 2 and not failure:
                if any(w.done() for w in workers):  # a worker died of something unexpected
                    break
                await asyncio.sleep(0.001)
            if any(w.done() for w in workers):
                break
            ids = delivery_ids[start : start + block]
            await asyncio.to_thread(ledger.mark_sending, ids)
            items = list(zip(plans[start : start + block], ids, strict=True))
            # other processes send to this workspace too: take our share a few slots at a time,
            # each piece queued the moment its slots are ours, so slots and sends stay together
            piece = min((b.slots for b in (budgets or {}).values()), default=len(items)) or 1
            for at in range(0, len(items), piece):
                if budgets:
                    part = items[at : at + piece]
                    deletes = sum(p.endpoint == DELETE for p, _ in part)
                    for bucket, n in (("track", len(part) - deletes), ("delete", deletes)):
                        if n and bucket in budgets:
                            await budgets[bucket].take(n)
                for item in items[at : at + piece]:
                    queue.put_nowait(item)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
    finally:
        flush_task.cancel()
        for w in workers:
            w.cancel()
        await flush()
    if failure:
        raise failure[0]
    return stats
