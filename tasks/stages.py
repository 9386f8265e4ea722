"""The pipeline's stages as Prefect tasks, one run per batch and stage (a task is a chunk).

Tasks are async and awaited on the flow's event loop, which owns the Braze client's connections;
blocking work (Postgres, polars) runs in a worker thread so one account's extraction never stalls
another account's requests on the same loop.

`read_ahead` lets the flow map the next range of the log while the current batch is delivered:
without it the workspace sits idle between batches for the whole extract + validate + transform
(benchmarks/RESULTS.md: 1.4-1.8x Braze's floor at 400 requests/s, from those gaps alone).
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from masivo_braze_sync.capture import LogRange, next_range
from masivo_braze_sync.entities.base import Prepared
from masivo_braze_sync.ledger import BatchRef
from masivo_braze_sync.pipeline import AccountRun


@dataclass
class Ahead:
    """The next range of the log, read and mapped before it is taken as a batch."""

    range: LogRange
    rows: int
    validated: Prepared
    transformed: Prepared
    #: the keys read in change order (`AccountRun.fit`), when the entity ends batches at whole requests
    order: pl.DataFrame | None


class PipelinedRun(AccountRun):
    """An `AccountRun` that can prepare the range after a batch while that batch is delivered.

    Only for entities that declare `read_ahead = True`: their rows must not depend on what the
    sync itself commits (events do not; customers read the hashes the previous batch commits,
    purchases the lines it sent). Reading ahead takes no batch, writes nothing and counts nothing:
    `take_ahead` uses the result only if the ledger's next batch is exactly that range (the
    cursor moved there and no later rows joined a short range), else the batch is read as usual.
    """

    ahead: Ahead | None = None

    def read_ahead(self, batch: BatchRef) -> int:
        """Extract, validate and transform the range after `batch`; returns its rows (0: none)."""
        self.ahead = None
        if self.dry_run or not getattr(self.entity, "read_ahead", False):
            return 0
        with self.db.connection() as conn:
            rng = next_range(
                conn,
                entities=self.entity.captured,
                account_id=self.account.account_id,
                after=batch.range.upto,
                limit=self.settings.batch_rows,
            )
        if rng is None:
            return 0
        frame = self.entity.extract(self.db.url, self.account.account_id, rng)
        validated = self.entity.validate(frame, self.ctx)
        transformed = self.entity.transform(validated.frame, self.ctx)
        # only the objects wait for the batch: the rows they came from are let go now
        self.ahead = Ahead(
            rng,
            frame.height,
            replace(validated, frame=validated.frame.clear()),
            transformed,
            self.entity.read_order(frame),
        )
        return frame.height

    def take_ahead(self, batch: BatchRef) -> pl.DataFrame | None:
        """The objects read ahead for `batch`, with the effects of extract, validate and transform
        (rows read, rejects, skips, state); None when `batch` is not the range read ahead."""
        ahead, self.ahead = self.ahead, None
        if ahead is None or batch.resumed or batch.range != ahead.range:
            return None
        self.summary.rows_read += ahead.rows
        self._order = ahead.order
        self._note(ahead.validated)
        self._note(ahead.transformed)
        return ahead.transformed.frame


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


#: read-aheads get their own threads: they are long and CPU-bound, and must never hold up the
#: short ledger writes that delivery makes through the default pool between blocks of requests
_AHEAD_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead")


@stage(name="read-ahead")
async def read_ahead(run_key: str, batch: BatchRef) -> int:
    """Read and map the range after `batch` (runs while `batch` is delivered); returns its rows."""
    return await asyncio.get_running_loop().run_in_executor(_AHEAD_POOL, _RUNS[run_key].read_ahead, batch)


@stage(name="deliver")
async def deliver(run_key: str, batch: BatchRef, objects: pl.DataFrame) -> dict[str, int]:
    """Batch and send the objects, recording every answer in the ledger; returns counts."""
    stats = await _RUNS[run_key].deliver(batch, objects)
    return {"requests": stats.requests, "objects_sent": stats.objects_sent, "rejected": stats.rejected}


@stage(name="commit")
async def commit(run_key: str, batch: BatchRef) -> None:
    """Record rejected rows and move the cursor past the batch."""
    await asyncio.to_thread(_RUNS[run_key].commit, batch)
