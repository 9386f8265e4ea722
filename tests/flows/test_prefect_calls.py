"""What an account run costs in Prefect, counted: task runs and API requests, not time.

Each task run and each API request is work of the flow process and a round trip to the server
between two batches (benchmarks/RESULTS.md, "Issue 16 §2: Prefect's share"); these tests pin how
many an account run makes.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest
from prefect import flow

from flows.common import PROGRESS_SECONDS
from flows.events import sync_events
from tasks.stages import run_batches

TAG_LIMITS = "POST /api/v2/concurrency_limits/increment-with-lease"
PROGRESS_UPDATE = "PATCH /api/artifacts/{id}"


@pytest.fixture
def prefect_requests(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request this process sends to the Prefect API, by method and path (ids as `{id}`).

    Observes Prefect's HTTP client class and passes every call through unchanged.
    """
    from prefect.client.base import PrefectHttpxAsyncClient

    seen: Counter[str] = Counter()
    send = PrefectHttpxAsyncClient.send
    ident = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    async def counted(client, request, *args, **kwargs):
        seen[f"{request.method} {ident.sub('{id}', request.url.path)}"] += 1
        return await send(client, request, *args, **kwargs)

    monkeypatch.setattr(PrefectHttpxAsyncClient, "send", counted)
    return seen


async def _task_runs(flow_run_name: str) -> list:
    """The task runs of the one flow run named `flow_run_name`, once the server recorded them ended.

    Task runs reach the server as events (sent by the caller first: `EventsWorker.drain_all()`),
    recorded in the background: wait (60 s at most) until there is one and every one is final.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    runs = FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
    async with get_client() as client:
        assert len(await client.read_flow_runs(flow_run_filter=runs)) == 1
        deadline = time.monotonic() + 60
        while True:
            task_runs = await client.read_task_runs(flow_run_filter=runs)
            if (task_runs and all(t.state and t.state.is_final() for t in task_runs)) or time.monotonic() > deadline:
                return task_runs
            await asyncio.sleep(0.5)


def test_an_account_run_of_many_batches_is_one_task_run_without_tag_limit_requests(
    prefect_api, make_account, add_events, received, emulator, prefect_requests, monkeypatch
) -> None:
    from prefect.events.worker import EventsWorker

    from masivo_braze_sync.settings import get_settings

    monkeypatch.setenv("MASIVO_BATCH_ROWS", "75")  # one request per batch: 12 batches
    get_settings.cache_clear()
    make_account("calls-1", customers=1)  # a name no other test uses: one flow run by that name
    ids = add_events("calls-1", 12 * 75)

    started = time.monotonic()
    (summary,) = asyncio.run(sync_events())
    seconds = time.monotonic() - started

    assert summary["batches"] == 12
    assert sorted(received("calls-1")) == sorted(ids)
    # before: one task run per batch and one for the step that found nothing (13), each tagged
    # `entity:`/`account:`, so the task engine asked the server for tag limits before each one
    EventsWorker.drain_all()
    (task_run,) = asyncio.run(_task_runs("events-calls-1"))
    assert task_run.name.startswith("batches")
    assert task_run.tags == []
    assert prefect_requests[TAG_LIMITS] == 0
    # before: one progress update per batch (12) and the last one
    assert 1 <= prefect_requests[PROGRESS_UPDATE] <= 1 + seconds / PROGRESS_SECONDS


def test_a_task_run_takes_batches_until_its_time_is_up(prefect_api) -> None:
    @flow
    async def steps(seconds: float) -> tuple[list[list[int]], list[int]]:
        left = iter([1, 2, 3, None])

        async def step() -> int | None:
            return next(left)

        seen: list[int] = []
        per_task: list[list[int]] = []
        while True:
            out = await run_batches(step, seen.append, seconds=seconds)
            per_task.append(out.results)
            if out.done:
                return per_task, seen

    # a long backlog shows as several task runs, each with at least one batch
    assert asyncio.run(steps(0.0)) == ([[1], [2], [3], []], [1, 2, 3])
    assert asyncio.run(steps(60.0)) == ([[1, 2, 3]], [1, 2, 3])
