"""The pipeline's stages as Prefect tasks, one run per batch and stage (a task is a chunk).

Tasks are async and awaited on the flow's event loop, which owns the Braze client's connections;
blocking work (Postgres, polars) runs in a worker thread so one account's extraction never stalls
another account's requests on the same loop.
"""

from __future__ import annotations

import asyncio
import uuid

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from masivo_braze_sync.ledger import BatchRef
from masivo_braze_sync.pipeline import AccountRun

_RUNS: dict[str, AccountRun] = {}


def register(run: AccountRun) -> str:
    """Make a live run reachable by key from tasks in this process."""
    key = f"{run.entity.name}:{run.account.account_id}:{uuid.uuid4().hex[:8]}"
    _RUNS[key] = run
    return key


def unregister(key: str) -> None:
    """Forget a finished run."""
    _RUNS.pop(key, None)


stage = task(cache_policy=NO_CACHE, persist_result=False, log_prints=False)


@stage(name="next-batch")
async def next_batch(run_key: str) -> BatchRef | None:
    """Resume an interrupted batch or take the next range of the change log."""
    return await asyncio.to_thread(_RUNS[run_key].next_batch)


@stage(name="extract")
async def extract(run_key: str, batch: BatchRef) -> pl.DataFrame:
    """Read the batch's changed rows."""
    return await asyncio.to_thread(_RUNS[run_key].extract, batch)


@stage(name="validate")
async def validate(run_key: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Apply business and Braze field rules."""
    return await asyncio.to_thread(_RUNS[run_key].validate, frame)


@stage(name="transform")
async def transform(run_key: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Build the Braze objects."""
    return await asyncio.to_thread(_RUNS[run_key].transform, frame)


@stage(name="deliver")
async def deliver(run_key: str, batch: BatchRef, objects: pl.DataFrame) -> dict[str, int]:
    """Batch and send the objects, recording every answer in the ledger; returns counts."""
    stats = await _RUNS[run_key].deliver(batch, objects)
    return {"requests": stats.requests, "objects_sent": stats.objects_sent, "rejected": stats.rejected}


@stage(name="commit")
async def commit(run_key: str, batch: BatchRef) -> None:
    """Record rejected rows and move the cursor past the batch."""
    await asyncio.to_thread(_RUNS[run_key].commit, batch)
