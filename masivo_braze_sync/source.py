"""Where a run's batches come from.

A source hands `AccountRun` its batches, reads each batch's rows and says when a batch may be
committed. The default, `ChangeLog`, takes ranges of the change log after the consumer's cursor
(an interrupted batch first) and commits each one; the manual audience resync reads pages of an
audience's members into one ledger batch (`resync.MemberPages`). Everything between reading and
committing (validate, transform, fit, deliver) is the same stage loop for every source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import polars as pl

from masivo_braze_sync.capture import LogRange, Position, read_cursor, read_next
from masivo_braze_sync.ledger import BatchRef

if TYPE_CHECKING:
    from masivo_braze_sync.pipeline import AccountRun


class BatchSource(Protocol):
    """What `AccountRun.step()` asks of the place its batches come from."""

    def next_batch(self, run: AccountRun) -> BatchRef | None:
        """The next batch to sync, or None when there is nothing (readable) left."""

    def extract(self, run: AccountRun, batch: BatchRef) -> pl.DataFrame:
        """The rows behind `batch`."""

    def peek(self, run: AccountRun, batch: BatchRef) -> LogRange | None:
        """The range that will follow `batch`, for reading ahead; None when unknown."""

    def complete(self, batch: BatchRef) -> bool:
        """Whether `batch` has been read whole, so that it may be committed."""

    def commit(self, run: AccountRun, batch: BatchRef, rejected: pl.DataFrame, on_commit) -> None:
        """Close the batch: record its rejected rows, run `on_commit` and move the cursor, atomically."""


class ChangeLog:
    """Batches are ranges of the consumer's change log (the default source)."""

    def __init__(self) -> None:
        #: a dry run moves no cursor: it remembers how far it has read
        self._dry_position: Position | None = None

    def next_batch(self, run: AccountRun) -> BatchRef | None:
        """An interrupted batch first, else the next range after the cursor (a dry run: after what it read)."""
        if not run.dry_run:
            return run.ledger.next_batch(run.entity.captured, run.settings.batch_rows)
        with run.db.connection() as conn:
            if self._dry_position is None:
                self._dry_position = read_cursor(conn, consumer=run.ledger.consumer, account_id=run.account.account_id)
            rng = self._range_after(run, conn, self._dry_position)
        return None if rng is None else BatchRef(None, run.ledger.consumer, run.account.account_id, rng)

    def extract(self, run: AccountRun, batch: BatchRef) -> pl.DataFrame:
        """The changed rows behind the batch's log range."""
        return run.entity.extract(run.db.url, run.account.account_id, batch.range)

    def peek(self, run: AccountRun, batch: BatchRef) -> LogRange | None:
        """The range after `batch` as a new batch would take it now."""
        with run.db.connection() as conn:
            return self._range_after(run, conn, batch.range.upto)

    def complete(self, batch: BatchRef) -> bool:
        """A range is read whole by one extract."""
        return True

    def commit(self, run: AccountRun, batch: BatchRef, rejected: pl.DataFrame, on_commit) -> None:
        """Move the cursor past the batch (a dry run only remembers the position)."""
        if run.dry_run:
            self._dry_position = batch.range.upto
        else:
            run.ledger.commit(batch, rejected, on_commit)

    @staticmethod
    def _range_after(run: AccountRun, conn, after: Position) -> LogRange | None:
        # the same bound as the ledger's reads (a dry run and a read-ahead see what a batch would)
        return read_next(
            conn,
            entities=run.entity.captured,
            account_id=run.account.account_id,
            after=after,
            limit=run.settings.batch_rows,
            bound_by=run.ledger.bound_by,
            part=run.ledger.part,
            cap=run.ledger.cap,
        ).range
