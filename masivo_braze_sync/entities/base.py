"""What an entity mapping provides to the shared pipeline.

The pipeline (capture → extract → validate → transform → batch → deliver → commit) is the same
for every entity; an entity only says which change-log entities it follows, how to read the
changed rows, which rows to drop or reject, and how a row becomes a Braze object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import psycopg

from masivo_braze_sync.accounts import AccountConfig
from masivo_braze_sync.capture import LogRange
from masivo_braze_sync.extract import read_range

#: frame of objects ready to send: key (str, the ledger key), array (str), body (binary JSON).
#: `array` is a /users/track array (attributes, events, purchases) or "delete" (/users/delete; the
#: body is then unused and the key is the external id to delete)
OBJECT_SCHEMA = {"key": pl.String, "array": pl.String, "body": pl.Binary}
#: frame of rows not sent: key, stage, reason
REJECT_SCHEMA = {"key": pl.String, "stage": pl.String, "reason": pl.String}


@dataclass
class Prepared:
    """The outcome of validate or transform: rows to go on, rows rejected, rows skipped by rule.

    `state` is what the entity wants remembered once the batch is delivered (for example the
    hashes of the fields sent), keyed by `key`; `metrics` are extra counts for the run summary.
    """

    frame: pl.DataFrame
    rejected: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECT_SCHEMA))
    skipped: dict[str, int] = field(default_factory=dict)
    state: pl.DataFrame | None = None
    metrics: dict[str, int] = field(default_factory=dict)
    #: the keys behind `skipped` (key, reason), from entities that end batches at whole requests
    skipped_keys: pl.DataFrame | None = None


def judge(frame: pl.DataFrame, verdict: pl.Expr) -> Prepared:
    """Split rows by a verdict per row: null goes on, `"skip:<reason>"` is counted (and its key
    named), `"reject:<reason>"` is rejected at stage `validate`. The rows that go on are `frame`'s."""
    judged = frame.with_columns(verdict.alias("_verdict"))
    out = (
        judged.filter(pl.col("_verdict").is_not_null())
        .select("key", pl.col("_verdict").str.splitn(":", 2).struct.rename_fields(["kind", "reason"]).alias("_v"))
        .unnest("_v")
    )
    skipped_keys = out.filter(pl.col("kind") == "skip").select("key", "reason")
    counts = skipped_keys.group_by("reason").len()
    return Prepared(
        frame=judged.filter(pl.col("_verdict").is_null()).drop("_verdict"),
        rejected=out.filter(pl.col("kind") == "reject")
        .select("key", pl.lit("validate").alias("stage"), "reason")
        .cast(REJECT_SCHEMA),
        skipped=dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True)),
        skipped_keys=skipped_keys,
    )


@dataclass(frozen=True)
class AccountContext:
    """What a mapping may know about the account (never its API key)."""

    account_id: str
    currency: str = "USD"
    #: the integration's toggles (`sync_events`, `sync_customer_tags`, ...)
    toggles: dict[str, bool] = field(default_factory=dict)
    #: how orders reach Braze: `purchases`, `ecommerce` or `both` (`AccountConfig.orders_mode`)
    orders_as: str = "purchases"


def update_only(ctx: AccountContext) -> bool:
    """Whether every object for the account must be update-only (`_update_existing_only: true`).

    With the customers' Create toggle off, no object of any entity may create a Braze profile:
    without the flag, an object for an unknown `external_id` creates one
    (docs/braze.md#user-attributes-object).
    """
    return not ctx.toggles.get("sync_customers_create", True)


class Entity:
    """Base class of an entity mapping; subclasses set the attributes and the three methods."""

    #: consumer name: the flow, the cursor and the CLI word (`sync events`)
    name: str
    #: change-log entities (source table names) this consumer follows
    captured: tuple[str, ...]
    #: braze_integrations toggle column that switches it on
    toggle: str
    #: SQL for the changed rows over a log range: $1 account, $2/$3 after (txid, id), $4/$5 upto
    extract_sql: str
    #: the column the rows are sorted by once read, when `extract_sql` leaves the order to the
    #: client (polars sorts 20,000 rows in ~2 ms; the server's sort was ~15% of the read)
    extract_order: str | None = None
    #: whether re-sending an object is harmless (attribute sets, deletes). After a crash, an
    #: idempotent entity re-sends its whole interrupted batch (so the state it commits is exactly
    #: what was sent); a non-idempotent one (events, purchases) skips what the ledger says landed.
    idempotent: bool = False
    #: whether a full batch may end at the last whole request (`AccountRun.fit`): the extract
    #: returns one row per key with `log_ord` (the rank of the key's first log row in the range) in
    #: that order, transform keeps that order with at most one object per key and no metrics, and
    #: validate/transform name their skipped keys (`Prepared.skipped_keys`)
    whole_requests: bool = False
    #: whether the range after a batch may be read and mapped while the batch is delivered
    #: (`AccountRun.step`): only when the entity's rows do not depend on what the sync itself commits
    #: (events do not; customers read the hashes the previous batch commits, purchases the lines sent)
    read_ahead: bool = False
    #: whether the entity's objects concern customers whose profile must reach Braze first: its
    #: reads then stay below the horizon the customers consumer last caught up to, when the account
    #: syncs customers (docs/live.md#profile-before-event)
    after_customers: bool = False

    def extract(self, url: str, account_id: str, log_range: LogRange) -> pl.DataFrame:
        """The changed rows behind `log_range`, in change order."""
        frame = read_range(url, self.extract_sql, account_id=account_id, log_range=log_range)
        return frame.sort(self.extract_order) if self.extract_order else frame

    def read_order(self, frame: pl.DataFrame) -> pl.DataFrame | None:
        """The keys of an extracted frame in change order (`key`, `log_ord`), for entities that end
        batches at whole requests; None for the others."""
        return frame.select("key", "log_ord") if self.whole_requests else None

    def is_enabled(self, account: AccountConfig) -> bool:
        """Whether this entity syncs for the account (integration enabled, toggle on)."""
        return account.is_on(self.toggle)

    def check(self, account: AccountConfig) -> None:
        """Raise ConfigurationError when the account's settings for this entity cannot be used."""

    def validate(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Business rules and Braze field rules on whole columns."""
        raise NotImplementedError

    def transform(self, frame: pl.DataFrame, ctx: AccountContext) -> Prepared:
        """Valid rows to Braze objects (OBJECT_SCHEMA); rows that cannot be mapped are rejected."""
        raise NotImplementedError

    def commit_state(self, conn: psycopg.Connection, ctx: AccountContext, state: pl.DataFrame) -> None:
        """Store `state` rows of delivered keys, inside the transaction that moves the cursor."""

    def full_resync(self, conn: psycopg.Connection, account_id: str, *, resend: bool) -> int:
        """Queue every current row of the entity for the account again (`sync --full`).

        Appends one change-log row (op `F`) per current row of the entity's first captured table;
        the next run reads them like any change, paced like any run. Returns how many were queued.
        Entities that must not re-send what was delivered override this (`resend=False`).
        """
        table = self.captured[0]
        return conn.execute(
            f"INSERT INTO braze_sync.change_log (account_id, entity, entity_key, op) "
            f"SELECT account_id, '{table}', id, 'F' FROM public.{table} WHERE account_id = %s",
            (account_id,),
        ).rowcount

    def requeue_entries(self, keys: list[str]) -> list[tuple[str, str]]:
        """Change-log (entity, key) pairs that make the rows behind rejected keys go again."""
        return [(self.captured[0], key) for key in keys]
