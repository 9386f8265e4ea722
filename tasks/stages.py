"""The pipeline's stages as Prefect tasks: `AccountRun.step()` runs each stage through `run_stage`.

The stage loop lives in the core (`masivo_braze_sync/pipeline.py`); this module only decides how a
stage shows in Prefect: one task run per batch and stage (a task is a chunk, never a request).
A task receives the stage as a call with no arguments, so no frame, payload or key becomes a task
parameter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from masivo_braze_sync.errors import SyncError
from masivo_braze_sync.pipeline import STAGES

T = TypeVar("T")


@task(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
async def _stage(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except SyncError as exc:
        # ours (ids and counts only): the task fails with its message in one line, where a raise
        # would log a traceback; `run_stage` raises `exc` again (docs/operations.md#logs)
        return Failed(message=str(exc), data=exc)


_TASKS = {name: _stage.with_options(name=name) for name in STAGES}


async def run_stage(name: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run one stage of an account run as a Prefect task named after the stage."""
    out = await _TASKS[name](call)
    if isinstance(out, State):  # a task returns a state it ends in as is: raise what failed it
        raise await out.aresult(raise_on_failure=False)
    return out
