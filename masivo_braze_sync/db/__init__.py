"""Source tables, the sync's own schema, connections and migrations."""

from masivo_braze_sync.db.engine import Database, connect, resolve_database_url

__all__ = ["Database", "connect", "resolve_database_url"]
