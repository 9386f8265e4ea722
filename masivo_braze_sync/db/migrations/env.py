"""Alembic environment: migrations run on the connection `masivo_braze_sync.db.migrate` hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from masivo_braze_sync.db.models import SYNC_SCHEMA

connection = context.config.attributes["connection"]
# Two `db init` at once would race on CREATE SCHEMA; an advisory lock serialises them.
connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('masivo_braze_sync.migrations'))"))
connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SYNC_SCHEMA}"))
context.configure(
    connection=connection,
    version_table="alembic_version",
    version_table_schema=SYNC_SCHEMA,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
