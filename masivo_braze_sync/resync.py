"""Manual resync of one audience: re-send `masivo_<audience name>` = `true` to every current member.

For when Braze was edited by hand or a workspace was restored. Not cursor-driven: the members are
read from `audience_members` in keyset pages of `chunk_rows` (by customer id, 20,000 by default),
so memory stays flat whatever the audience's size. Each page goes through the same stages as a
sync run: `AccountRun.step()` with the pages as its source (`MemberPages`), so validate → transform
→ deliver (`batch.pack`, `deliver.deliver`, the ledger, the workspace's shared Braze client and
pacer) are the sync's own stage loop. All pages share one ledger batch of
consumer `audiences-resync`, committed at the end with the rejected rows; the `audiences` cursor is
never touched. An interrupted resync leaves that batch open; the next resync of the account takes
it over (attribute sets are idempotent: it simply sends everything again).

The resync holds the account's `audiences` sync lock while it runs, so it never interleaves with a
regular sync (a member who leaves meanwhile is nulled by the next sync, after the resync).
Deleted customers are skipped, as in the sync. Refused before anything is sent, with a message that
names only ids: an unknown account or audience, a deleted audience, an account without an enabled
Braze integration or with the Audiences toggle off, a name too long for a Braze key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import polars as pl

from masivo_braze_sync.accounts import AccountConfig, known_account_ids, load_accounts
from masivo_braze_sync.budget import SharedBudget
from masivo_braze_sync.capture import LogRange, Position
from masivo_braze_sync.db.engine import Database, connect
from masivo_braze_sync.entities.audiences import (
    AUDIENCES,
    RESYNC_CONSUMER,
    attribute_key,
    attribute_objects,
    judge_customers,
    key_problem,
)
from masivo_braze_sync.entities.base import CUSTOMER_STATE_SQL, AccountContext, Entity, Prepared, update_only
from masivo_braze_sync.errors import SyncError
from masivo_braze_sync.extract import read_frame
from masivo_braze_sync.ledger import BatchRef, try_lock
from masivo_braze_sync.pipeline import AccountBusy, AccountRun, RunFailed
from masivo_braze_sync.settings import Settings
from masivo_braze_sync.summary import AccountSummary

CHUNK_ROWS = 20_000

_MEMBERS = f"""
SELECT m.customer_id AS key, m.customer_id,
       {CUSTOMER_STATE_SQL}
FROM public.audience_members m
LEFT JOIN public.customers c ON c.account_id = m.account_id AND c.id = m.customer_id
WHERE m.account_id = $1 AND m.audience_id = $2 {{after}}
ORDER BY m.customer_id
LIMIT {{limit}}
"""


class ResyncRefused(SyncError):
    """The resync cannot run (unknown account or audience, ...): nothing was sent."""


class AudienceResync(Entity):
    """The resync's stages: every row is a current member; its object sets the one attribute."""

    name = RESYNC_CONSUMER
    captured = ()  # reads no change log
    toggle = AUDIENCES.toggle
    extract_sql = ""
    idempotent = True

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Deleted customers are skipped, unusable ids rejected (as in the sync)."""
        return judge_customers(frame)

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """`{"external_id": id, <key>: true}` per member (column `attribute` holds the key)."""
        ids = frame.get_column("customer_id").to_list()
        keys = frame.get_column("attribute").to_list()
        return Prepared(
            frame=attribute_objects(
                {c: {k: True} for c, k in zip(ids, keys, strict=True)}, update_only=update_only(ctx)
            ),
            metrics={"attributes_set": len(ids)},
        )


AUDIENCE_RESYNC = AudienceResync()


def _target(db: Database, account_id: str, audience_id: str) -> tuple[AccountConfig, str]:
    """The account and the audience's attribute key, or ResyncRefused / a clear reason."""
    with db.connection() as conn:
        accounts = load_accounts(conn, [account_id])
        if not accounts:
            if account_id in known_account_ids(conn):
                raise ResyncRefused(f"account {account_id}: no Braze integration configured; nothing sent")
            raise ResyncRefused(f"account {account_id} not found; nothing sent")
        row = conn.execute(
            "SELECT name, deleted_at IS NOT NULL FROM public.audiences WHERE account_id = %s AND id = %s",
            (account_id, audience_id),
        ).fetchone()
    if row is None:
        raise ResyncRefused(f"audience {audience_id} not found in account {account_id}; nothing sent")
    name, deleted = row
    if deleted:
        raise ResyncRefused(f"audience {audience_id} of account {account_id} is deleted; nothing sent")
    account = accounts[0]
    if not AUDIENCES.is_enabled(account):
        raise ResyncRefused(
            f"account {account_id}: the Braze integration is disabled or the Audiences toggle is off; nothing sent"
        )
    key = attribute_key(name)
    if key is None:  # the reason names no data: a rule and the keys it protects
        raise ResyncRefused(f"audience {audience_id} of account {account_id}: {key_problem(name)}; nothing sent")
    return account, key


class MemberPages:
    """The resync's batch source: one ledger batch, read as keyset pages of the audience's members.

    The batch is committed once its last page (a short or empty one) has been delivered.
    """

    def __init__(self, audience_id: str, attribute: str, chunk_rows: int) -> None:
        self.audience_id = audience_id
        self.attribute = attribute
        self.chunk_rows = int(chunk_rows)
        self._batch: BatchRef | None = None
        self._after: str | None = None
        self._read_all = False
        self._committed = False

    def next_batch(self, run: AccountRun) -> BatchRef | None:
        """The resync's batch while pages remain (an interrupted resync's open batch is taken over)."""
        if self._committed:
            return None
        if self._batch is None:
            self._batch = _open_batch(run)
        return self._batch

    def extract(self, run: AccountRun, batch: BatchRef) -> pl.DataFrame:
        """The next page of current members (customer id order), with the attribute to set."""
        where, params = "", (run.account.account_id, self.audience_id)
        if self._after is not None:
            where, params = "AND m.customer_id > $3", (*params, self._after)
        frame = read_frame(run.db.url, _MEMBERS.format(after=where, limit=self.chunk_rows), params)
        if frame.height:
            self._after = frame.get_column("customer_id")[-1]
        self._read_all = frame.height < self.chunk_rows
        return frame.with_columns(pl.lit(self.attribute).alias("attribute"))

    def peek(self, run: AccountRun, batch: BatchRef) -> LogRange | None:
        """Pages are not read ahead."""
        return None

    def complete(self, batch: BatchRef) -> bool:
        """The batch is whole once a short page was read."""
        return self._read_all

    def commit(self, run: AccountRun, batch: BatchRef, rejected: pl.DataFrame, on_commit) -> None:
        """Close the resync's batch with every page's rejected rows."""
        run.ledger.commit(batch, rejected, on_commit)
        self._committed = True


def _open_batch(run: AccountRun) -> BatchRef:
    """The account's open resync batch (an interrupted resync's), else a new one."""
    account_id = run.account.account_id
    with run.db.connection() as conn:
        row = conn.execute(
            "UPDATE braze_sync.batches SET attempts = attempts + 1 "
            "WHERE consumer = %s AND account_id = %s AND status = 'open' RETURNING id",
            (RESYNC_CONSUMER, account_id),
        ).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO braze_sync.batches (consumer, account_id, from_txid, from_id, to_txid, to_id) "
                "VALUES (%s, %s, '0', 0, '0', 0) RETURNING id",
                (RESYNC_CONSUMER, account_id),
            ).fetchone()
            resumed = False
        else:
            resumed = True
    if resumed:
        run.ledger.take_over(row[0])  # retire the interrupted attempt's unfinished requests
    nowhere = Position.start()
    return BatchRef(row[0], RESYNC_CONSUMER, account_id, LogRange(nowhere, nowhere, 0))


async def resync_audience(
    db: Database,
    account_id: str,
    audience_id: str,
    settings: Settings | None = None,
    *,
    chunk_rows: int = CHUNK_ROWS,
    transport=None,
    flow_run_id: str | None = None,
    resolve_account: Callable[[AccountConfig], Awaitable[AccountConfig]] | None = None,
    budget_factory: Callable[[str, str, int, float], SharedBudget] | None = None,
) -> AccountSummary:
    """Send `true` for the audience's attribute to each current member, `chunk_rows` at a time.

    `resolve_account` (the flow's API-key resolution) and `budget_factory` (the cross-process rate
    budget) are what the orchestrator adds to a sync run; they are passed the same way here.
    """
    account, key = _target(db, account_id, audience_id)
    if resolve_account is not None:
        account = await resolve_account(account)
    run = AccountRun(
        db,
        AUDIENCE_RESYNC,
        account,
        settings,
        transport=transport,
        budget_factory=budget_factory,
        source=MemberPages(audience_id, key, chunk_rows),
    )
    run.flow_run_id = flow_run_id
    sync_lock = None
    try:
        async with run:
            sync_lock = connect(db.url, autocommit=True)
            if not try_lock(sync_lock, AUDIENCES.name, account_id):
                run.summary.status = "busy"
                raise AccountBusy(f"account {account_id}: an audiences sync is running; try the resync again")
            await run.run()
    except (AccountBusy, ResyncRefused):
        raise
    except Exception as exc:
        raise RunFailed(run.summary) from exc
    finally:
        if sync_lock is not None:
            try:  # unlock first: a closed session's locks go only when its backend exits
                sync_lock.execute("SELECT pg_advisory_unlock_all()")
            finally:
                sync_lock.close()
    return run.summary
