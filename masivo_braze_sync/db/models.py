"""sqlmodel models: Masivo's source tables (Masivo's schema, as the sync reads it) and the sync's own state.

Masivo's tables live in the default schema and belong to Masivo: names and columns here are the
public interface (columns may be added, never renamed). The sync's state lives in its own
schema, `braze_sync`, and is created by the Alembic migrations in `migrations/`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

SYNC_SCHEMA = "braze_sync"

NOW = sa.text("now()")
TRUE = sa.text("true")
EMPTY_OBJECT = sa.text("'{}'::jsonb")


def _ts(*, nullable: bool = True, default: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(sa.TIMESTAMP(timezone=True), nullable=nullable, server_default=NOW if default else None),
    )


def _flag() -> Any:
    return Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=TRUE))


def _jsonb(*, default_empty: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=sa.Column(JSONB, nullable=not default_empty, server_default=EMPTY_OBJECT if default_empty else None),
    )


# --- Masivo's source tables ---------------------------------------------------------------


class Account(SQLModel, table=True):
    """A Masivo tenant: one brand's loyalty program."""

    __tablename__ = "accounts"
    id: str = Field(primary_key=True)
    name: str
    currency: str = Field(default="USD", sa_column=sa.Column(sa.CHAR(3), nullable=False, server_default="USD"))


class BrazeIntegration(SQLModel, table=True):
    """An account's connection to its Braze workspace, with a toggle per kind of data.

    Columns after `updated_at` are ours (per-account Braze limits); null means the process default.
    """

    __tablename__ = "braze_integrations"
    account_id: str = Field(primary_key=True, foreign_key="accounts.id")
    api_key: str | None = None
    rest_endpoint: str | None = None
    enabled: bool = _flag()
    sync_customers_create: bool = _flag()
    sync_customers_update: bool = _flag()
    sync_customers_delete: bool = _flag()
    sync_customer_tags: bool = _flag()
    sync_events: bool = _flag()
    sync_purchases: bool = _flag()
    sync_audiences: bool = _flag()
    updated_at: datetime | None = _ts(default=True)
    # Braze's newer rule: 75 objects in total per /users/track request instead of 75 per array
    combined_object_limit: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.text("false"))
    )
    track_rate_limit: int | None = None
    track_rate_window_seconds: float | None = None
    delete_rate_limit: int | None = None
    # how orders reach Braze: `purchases` (null: the default), `ecommerce` (eCommerce recommended
    # events) or `both`; any other value fails the account's purchases run (docs/braze.md#ecommerce-recommended-events)
    orders_as: str | None = None


class Customer(SQLModel, table=True):
    """A loyalty member; becomes a Braze user profile with `external_id` = `id`."""

    __tablename__ = "customers"
    account_id: str = Field(primary_key=True, foreign_key="accounts.id")
    id: str = Field(primary_key=True)
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    gender: str | None = None
    dob: date | None = None
    country: str | None = None
    language: str | None = None
    city: str | None = None
    status: str | None = None
    tier: str | None = None
    points: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric))
    tags: dict | None = _jsonb(default_empty=True)
    attributes: dict | None = _jsonb(default_empty=True)
    created_at: datetime | None = _ts(nullable=False, default=True)
    updated_at: datetime | None = _ts(nullable=False, default=True)
    deleted_at: datetime | None = _ts()


class Event(SQLModel, table=True):
    """A behavioral event; becomes a Braze custom event unless it is an internal one."""

    __tablename__ = "events"
    __table_args__ = (sa.Index("events_account_customer", "account_id", "customer_id"),)
    id: str = Field(primary_key=True)
    account_id: str = Field(foreign_key="accounts.id")
    customer_id: str
    type: str
    properties: dict | None = _jsonb()
    occurred_at: datetime = Field(sa_column=sa.Column(sa.TIMESTAMP(timezone=True), nullable=False))
    created_at: datetime | None = _ts(nullable=False, default=True)


class Order(SQLModel, table=True):
    """An order; its line items become Braze purchases once it is fulfilled."""

    __tablename__ = "orders"
    account_id: str = Field(primary_key=True, foreign_key="accounts.id")
    id: str = Field(primary_key=True)
    customer_id: str
    status: str = "PENDING"
    currency: str | None = Field(default=None, sa_column=sa.Column(sa.CHAR(3)))
    created_at: datetime | None = _ts(nullable=False, default=True)
    fulfilled_at: datetime | None = _ts()
    reversed_at: datetime | None = _ts()
    cancelled_at: datetime | None = _ts()
    updated_at: datetime | None = _ts(nullable=False, default=True)


class OrderItem(SQLModel, table=True):
    """One line of an order."""

    __tablename__ = "order_items"
    account_id: str = Field(primary_key=True)
    order_id: str = Field(primary_key=True)
    line_no: int = Field(primary_key=True)
    sku: str | None = None
    name: str | None = None
    quantity: int | None = None
    unit_price: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric(14, 2)))
    properties: dict | None = _jsonb()


class Audience(SQLModel, table=True):
    """A named segment of customers; membership becomes `masivo_<name>` = true in Braze."""

    __tablename__ = "audiences"
    account_id: str = Field(primary_key=True, foreign_key="accounts.id")
    id: str = Field(primary_key=True)
    name: str
    created_at: datetime | None = _ts(nullable=False, default=True)
    updated_at: datetime | None = _ts(nullable=False, default=True)
    deleted_at: datetime | None = _ts()


class AudienceMember(SQLModel, table=True):
    """A customer in an audience; deleting the row means the customer left."""

    __tablename__ = "audience_members"
    account_id: str = Field(primary_key=True)
    audience_id: str = Field(primary_key=True)
    customer_id: str = Field(primary_key=True)
    added_at: datetime | None = _ts(nullable=False, default=True)


SOURCE_TABLES = [
    m.__table__  # type: ignore[attr-defined]
    for m in (Account, BrazeIntegration, Customer, Event, Order, OrderItem, Audience, AudienceMember)
]

# --- the sync's own state (schema braze_sync; created by the migrations) ----------------------


class ChangeLog(SQLModel, table=True):
    """One row per change to a source row, written by triggers; read in commit-safe order."""

    __tablename__ = "change_log"
    __table_args__ = {"schema": SYNC_SCHEMA}
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    txid: str = Field(sa_column=sa.Column(sa.Text, nullable=False))  # xid8 in the database
    account_id: str
    entity: str
    entity_key: str
    op: str
    old_values: dict | None = _jsonb()
    created_at: datetime | None = _ts(nullable=False, default=True)
    #: the row's partition key hashed (its customer, or its order; NULL before 0008): `partitions.py`
    bucket: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger))


class Cursor(SQLModel, table=True):
    """How far one consumer (an entity flow) has delivered, per account: a (txid, log id) pair."""

    __tablename__ = "cursors"
    __table_args__ = {"schema": SYNC_SCHEMA}
    consumer: str = Field(primary_key=True)
    account_id: str = Field(primary_key=True)
    txid: str = "0"
    log_id: int = 0
    updated_at: datetime | None = _ts(nullable=False, default=True)


class Batch(SQLModel, table=True):
    """A bounded range of the change log taken by one consumer for one account."""

    __tablename__ = "batches"
    __table_args__ = {"schema": SYNC_SCHEMA}
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    consumer: str
    account_id: str
    from_txid: str
    from_id: int
    to_txid: str
    to_id: int
    status: str = "open"
    log_rows: int = 0
    attempts: int = 1
    created_at: datetime | None = _ts(nullable=False, default=True)
    committed_at: datetime | None = _ts()


class Delivery(SQLModel, table=True):
    """The delivery ledger: one row per Braze request of a batch, with the keys it carried."""

    __tablename__ = "deliveries"
    __table_args__ = {"schema": SYNC_SCHEMA}
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    batch_id: int
    account_id: str
    consumer: str
    seq: int
    endpoint: str
    keys: list[str] = Field(sa_column=sa.Column(ARRAY(sa.Text), nullable=False))
    status: str = "pending"  # pending | sending | delivered | rejected | unknown
    http_status: int | None = None
    attempts: int = 0
    possibly_duplicated: bool = False
    created_at: datetime | None = _ts(nullable=False, default=True)
    completed_at: datetime | None = _ts()


class RejectedRow(SQLModel, table=True):
    """A source row that was not sent, with the reason (never the row's data)."""

    __tablename__ = "rejected_rows"
    __table_args__ = {"schema": SYNC_SCHEMA}
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    account_id: str
    consumer: str
    entity_key: str
    stage: str  # validate | transform | braze
    reason: str
    batch_id: int | None = None
    created_at: datetime | None = _ts(nullable=False, default=True)
    retried_at: datetime | None = _ts()


class RunSummary(SQLModel, table=True):
    """One account's result in one run of one entity flow."""

    __tablename__ = "run_summaries"
    __table_args__ = {"schema": SYNC_SCHEMA}
    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, primary_key=True))
    flow_run_id: str | None = None
    consumer: str
    account_id: str
    status: str
    rows_read: int = 0
    objects_sent: int = 0
    requests: int = 0
    rejected: int = 0
    skipped: int = 0
    retries: int = 0
    rate_limited: int = 0
    possibly_duplicated: int = 0
    seconds: float = 0.0
    error: str | None = None
    started_at: datetime | None = _ts(nullable=False, default=True)
    finished_at: datetime | None = _ts()
