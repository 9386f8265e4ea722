"""An account run's batches as Prefect tasks: the flow runs each `AccountRun.step()` through `run_batch`.

The stage loop lives in the core (`masivo_braze_sync/pipeline.py`); this module only decides how a
batch shows in Prefect: one task run per batch (a task is a chunk, never a request). A task run
costs several API round trips and ~16 ms of the flow process's CPU, so one per stage (four or
five per batch) was a large part of Prefect's share of a run (benchmarks/RESULTS.md); the
batch's stage timings stay in its result and the run's summary.
A task receives the step as a call with no arguments, so no frame, payload or key becomes a task
parameter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from masivo_braze_sync.errors import SyncError

T = TypeVar("T")


@task(name="batch", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
async def _batch(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except SyncError as exc:
        # ours (ids and counts only): the task fails with its message in one line, where a raise
        # would log a traceback; `run_batch` raises `exc` again (docs/operations.md#logs)
        return Failed(message=str(exc), data=exc)


async def run_batch(step: Callable[[], Awaitable[T]]) -> T:
    """Run one step of an account run (a batch through every stage) as one Prefect task."""
    out = await _batch(step)
    if isinstance(out, State):  # a task returns a state it ends in as is: raise what failed it
        raise await out.aresult(raise_on_failure=False)
    return out
