"""`masivo-braze db init`: create Masivo's tables (optionally) and migrate the sync schema."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlmodel import SQLModel

from masivo_braze_sync.db.engine import Database
from masivo_braze_sync.db.models import SOURCE_TABLES
from masivo_braze_sync.errors import ConfigurationError

MIGRATIONS = Path(__file__).with_name("migrations")
REQUIRED_SOURCE_TABLES = {t.name for t in SOURCE_TABLES}


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def init_database(db: Database, *, source: bool = False) -> list[str]:
    """Create Masivo's tables when `source`, then bring the sync schema to the newest migration.

    Safe to run any number of times. Returns the names of the source tables it created.
    """
    created: list[str] = []
    with db.engine.begin() as conn:
        existing = set(sa.inspect(conn).get_table_names(schema="public"))
        if source:
            SQLModel.metadata.create_all(conn, tables=SOURCE_TABLES, checkfirst=True)
            created = sorted(REQUIRED_SOURCE_TABLES - existing)
        else:
            missing = REQUIRED_SOURCE_TABLES - existing
            if missing:
                raise ConfigurationError(
                    f"Masivo tables not found: {', '.join(sorted(missing))}. "
                    "Point MASIVO_DATABASE_URL at Masivo's database, or run `masivo-braze db init --source`."
                )
        command.upgrade(_alembic_config(conn), "head")
    return created


def current_revision(db: Database) -> str | None:
    """The sync schema's migration revision, or None before `db init`."""
    with db.engine.connect() as conn:
        try:
            rows = conn.execute(sa.text("SELECT version_num FROM braze_sync.alembic_version")).scalars().all()
            return ",".join(sorted(rows)) or None
        except sa.exc.ProgrammingError:
            return None
