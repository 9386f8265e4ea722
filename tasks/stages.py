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

from masivo_braze_sync.pipeline import STAGES

T = TypeVar("T")


@task(cache_policy=NO_CACHE, persist_result=False, log_prints=False)
async def _stage(call: Callable[[], Awaitable[T]]) -> T:
    return await call()


_TASKS = {name: _stage.with_options(name=name) for name in STAGES}


async def run_stage(name: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run one stage of an account run as a Prefect task named after the stage."""
    return await _TASKS[name](call)
