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
from masivo_braze_sync.braze.limits import BRAZE
from masivo_braze_sync.capture import LogRange, slice_sql
from masivo_braze_sync.extract import first_per_key, read_parts, read_range
from masivo_braze_sync.settings import get_settings

#: frame of objects ready to send: key (str, the ledger key), array (str), body (binary JSON).
#: `array` is a /users/track array (attributes, events, purchases) or "delete" (/users/delete; the
#: body is then unused and the key is the external id to delete)
OBJECT_SCHEMA = {"key": pl.String, "array": pl.String, "body": pl.Binary}
#: frame of rows not sent: key, stage, reason
REJECT_SCHEMA = {"key": pl.String, "stage": pl.String, "reason": pl.String}

#: the change-log rows of one account in a log range, in the parameters `read_range` binds:
#: $1 account, $2/$3 after (txid, id), $4/$5 upto, $6/$7 the range's slice (count, index: a
#: partition's share of the log, docs/change-capture.md#partitions); an `EXTRACT_SQL` adds `entity = ...`
IN_LOG_RANGE = (
    "account_id = $1 AND (txid, id) > ($2::text::xid8, $3::bigint) AND (txid, id) <= ($4::text::xid8, $5::bigint)"
    f" AND {slice_sql('bucket', '$6', '$7')}"
)
#: the first columns of an `extract_sql` that returns one row per change-log row (`Entity.log_rows`),
#: from the log's rows in the range selected as `l` (`entity_key`, `txid`, `id`): the key and the
#: row's place in change order, which `Entity.extract` turns into `log_ord`
LOG_ROW_SQL = "l.entity_key AS key, l.txid AS log_txid, l.id AS log_id"
#: the half of a range's keys one reader takes when a read is split (`Entity.extract`): $8 is the
#: half left out (0 or 1), -1 for the whole range (the planner then drops the test: the parameter's
#: value is known when the statement is planned). A key is always in one half, so each key's rows
#: stay together. `<>`, not `=`: the planner assumes an `=` on an expression keeps 0.5% of the rows,
#: and for so few it joins row by row through the indexes, twice as slow as the hash joins here
IN_READ_PART = "($8 = -1 OR hashtext(entity_key) & 1 <> $8)"
#: ranges from this many log rows are split when `Settings.extract_readers` is 2: under it, the
#: second reader's session and thread cost more than they save
SPLIT_MIN_ROWS = 5_000
#: the state of the customer joined as `c` (`missing`, `deleted` or `active`): objects for a
#: deleted customer would re-create its profile in Braze, so every entity skips them
CUSTOMER_STATE_SQL = """CASE WHEN c.id IS NULL THEN 'missing'
            WHEN c.deleted_at IS NOT NULL THEN 'deleted'
            ELSE 'active' END AS customer_state"""

#: one rule of a verdict: (condition, verdict), e.g. (`pl.col("present").not_()`, "skip:row deleted")
Rule = tuple[pl.Expr, str]


def first_rule(rules: list[Rule], otherwise: str | None = None) -> pl.Expr:
    """The verdict of the first rule whose condition holds (a null condition does not), else `otherwise`."""
    expr = None
    for condition, verdict in rules:
        expr = (pl.when(condition) if expr is None else expr.when(condition)).then(pl.lit(verdict))
    fallback = pl.lit(otherwise, dtype=pl.String)
    return fallback if expr is None else expr.otherwise(fallback)


#: the customer's profile is deleted: skipped, not rejected (the column is `CUSTOMER_STATE_SQL`'s)
CUSTOMER_DELETED: Rule = (pl.col("customer_state") == "deleted", "skip:customer deleted")


def customer_missing(kind: str = "reject") -> Rule:
    """No such customer: `reject` (the row names one that should exist) or `skip`."""
    return pl.col("customer_state") == "missing", f"{kind}:customer not found"


def customer_id_rules(column: str = "customer_id") -> list[Rule]:
    """External ids Braze refuses: empty, or longer than its limit in bytes (docs/braze.md#limits)."""
    ids = pl.col(column).fill_null("").str.len_bytes()
    return [
        (ids == 0, "reject:customer id is empty"),
        (ids > BRAZE.external_id_bytes, f"reject:customer id is longer than {BRAZE.external_id_bytes} bytes"),
    ]


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
    """Base class of an entity mapping: subclasses set the attributes and override the methods.

    Every extension point is declared here with its default; docs/architecture.md#entity-extension-points
    says when to set each one and what the pipeline then expects of the entity.
    """

    #: consumer name: the flow, the cursor and the CLI word (`sync events`); required
    name: str
    #: change-log entities (source table names) this consumer follows; required
    captured: tuple[str, ...]
    #: `braze_integrations` toggle column that switches the entity on; required
    toggle: str
    #: further toggle columns the mapping reads (`AccountContext.toggles`)
    extra_toggles: tuple[str, ...] = ()
    #: SQL for the changed rows over a log range (`IN_LOG_RANGE`'s parameters); required
    extract_sql: str
    #: the column to sort extracted rows by, when `extract_sql` leaves the order to the client
    extract_order: str | None = None
    #: whether `extract_sql` returns one row per change-log row (`LOG_ROW_SQL` first, a key may
    #: repeat, any order) and filters the log by `IN_READ_PART`: `extract` then keeps each key's
    #: first row, with `log_ord`, in change order, and may read a large range in two halves at once
    log_rows: bool = False
    #: whether re-sending an object is harmless: a resumed batch then re-sends all of it
    idempotent: bool = False
    #: whether a full batch may end at the last whole request (`AccountRun.fit`)
    whole_requests: bool = False
    #: whether the next range may be read and mapped while a batch is delivered (`AccountRun.step`)
    read_ahead: bool = False
    #: whether reads stay below the horizon the customers consumer caught up to (profiles first)
    after_customers: bool = False
    #: other consumers whose rejected rows this entity's sync sends again (`retry-rejected`)
    retries_rejected_of: tuple[str, ...] = ()

    @property
    def toggles(self) -> tuple[str, ...]:
        """Every `braze_integrations` toggle column the entity reads."""
        return (self.toggle, *self.extra_toggles)

    def extract(self, url: str, account_id: str, log_range: LogRange, *, readers: int | None = None) -> pl.DataFrame:
        """The changed rows behind `log_range`, in change order.

        `readers`: the connections a `log_rows` entity reads on (1 or 2); by default
        `Settings.extract_readers` for ranges of `SPLIT_MIN_ROWS` rows or more, else 1.
        """
        if not self.log_rows:
            frame = read_range(url, self.extract_sql, account_id=account_id, log_range=log_range)
            return frame.sort(self.extract_order) if self.extract_order else frame
        if readers is None:
            readers = get_settings().extract_readers if log_range.rows >= SPLIT_MIN_ROWS else 1
        # reader k leaves out half 1 - k; one reader leaves out nothing
        parts = [-1] if readers == 1 else [1, 0]
        halves = read_parts(url, self.extract_sql, account_id=account_id, log_range=log_range, parts=parts)
        return first_per_key(pl.concat(halves) if len(halves) > 1 else halves[0])

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
