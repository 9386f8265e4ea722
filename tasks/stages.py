"""An account run's batches as Prefect tasks: the flow drives `AccountRun.step()` through `run_batches`.

The stage loop lives in the core (`masivo_braze_sync/pipeline.py`); this module only decides how
batches show in Prefect. A task run is a stretch of consecutive batches (at most `TASK_SECONDS`
of them, and always at least one), never a stage or a request: each task run costs the flow
process engine work, state events and API round trips between two batches, while the workspace
waits. One task run per stage (four or five per batch), then one per batch, were most of Prefect's
share of a run (benchmarks/RESULTS.md, issue 16). Each batch's counts and timings stay in the
run's summary and report.

Batch task runs carry no tags. The account run's flow run keeps its `entity:`/`account:` tags;
tags inherited by a task run make Prefect's task engine ask the server for tag concurrency limits
before every task run (a blocking round trip, through a client and a thread of its own per tag
set), and this project sets no tag concurrency limits (its budgets are global concurrency limits,
`tasks/concurrency.py`). docs/prefect.md#task-runs.

A task receives the step as a call with no arguments, so no frame, payload or key becomes a task
parameter.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TagsContext
from prefect.states import Failed, State

from masivo_braze_sync.errors import SyncError

T = TypeVar("T")

#: a task run takes no new batch after this many seconds: the run history still shows a task run
#: at least every ~half minute of a long backlog, and a short backlog is one task run
TASK_SECONDS = 30.0


@dataclass(frozen=True)
class Batches(Generic[T]):
    """What one task run did: each batch's result, and whether the backlog is done (a step found nothing)."""

    results: list[T]
    done: bool


@task(name="batches", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
async def _batches(
    step: Callable[[], Awaitable[T | None]], on_batch: Callable[[T], None], seconds: float
) -> Batches[T] | State:
    ends = time.monotonic() + seconds
    results: list[T] = []
    try:
        while (result := await step()) is not None:
            results.append(result)
            on_batch(result)
            if time.monotonic() >= ends:
                return Batches(results, done=False)
        return Batches(results, done=True)
    except SyncError as exc:
        # ours (ids and counts only): the task fails with its message in one line, where a raise
        # would log a traceback; `run_batches` raises `exc` again (docs/operations.md#logs)
        return Failed(message=str(exc), data=exc)


async def run_batches(
    step: Callable[[], Awaitable[T | None]],
    on_batch: Callable[[T], None] = lambda _: None,
    seconds: float = TASK_SECONDS,
) -> Batches[T]:
    """Run `step` (one batch through every stage) as one Prefect task until it returns None or `seconds` pass.

    `on_batch` is called with each batch's result as it ends. Call again while `done` is False.
    """
    with TagsContext(current_tags=set()):  # see the module docstring: no tag-limit round trip
        out = await _batches(step, on_batch, seconds)
    if isinstance(out, State):  # a task returns a state it ends in as is: raise what failed it
        raise await out.aresult(raise_on_failure=False)
    return out
