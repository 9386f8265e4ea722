"""Partitions: a bucket per change-log row, and how many partitions each account's entity has.

Revision ID: 0008
Revises: 0007

- `change_log.bucket smallint`: `abs(hashtext(k)) % 1024` of the row's partition key `k`, stamped
  once when the row is written and never changed. `k` is the row's customer for customers
  (`id`) and events (`customer_id`), and the order for orders (`id`) and order lines (`order_id`):
  the purchases sync keeps state per order, so every change of one order must stay in one
  partition, and an order's id never changes while its customer may. Other tables (audiences,
  integrations) are never partitioned: their rows keep NULL. Rows written before this revision
  are NULL too; readers count NULL as bucket 0 (docs/change-capture.md#partitions).
- The capture functions of those four tables (0001) stamp the bucket in their one INSERT ...
  SELECT per statement. Rows appended by other statements (`sync --full`, `retry-rejected`) get
  it from a row trigger that runs only when the bucket is missing, looking the key up
  (an event's customer; an order line's order).
- `partitions`: per entity and account, how many partitions it has (no row: one, the whole log).
  Changed only by `masivo-braze partitions`, at a barrier (`partitions.change_count`).
"""

from importlib import import_module

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

S = "braze_sync"
#: the number of buckets (the Python side's `partitions.BUCKETS`; this is history, as DDL is)
BUCKETS = 1024
#: table -> (key, partition key) expressions over the transition-table alias `r`
PARTITIONED = {
    "customers": ("r.id", "r.id"),
    "events": ("r.id", "r.customer_id"),
    "orders": ("r.id", "r.id"),
    "order_items": ("jsonb_build_array(r.order_id, r.line_no)::text", "r.order_id"),
}
INSERT_ONLY = {"events"}


def _capture_sql(table: str, key: str, bucket: str) -> str:
    """0001's statement-level capture functions, with the bucket stamped (same names and triggers)."""
    ops = ("INSERT",) if table in INSERT_ONLY else ("INSERT", "UPDATE", "DELETE")
    out = []
    for tg_op in ops:
        rows = "old_rows" if tg_op == "DELETE" else "new_rows"
        old_values = "to_jsonb(r)" if tg_op == "DELETE" else "NULL::jsonb"
        out.append(f"""
CREATE OR REPLACE FUNCTION {S}.capture_{table}_{tg_op.lower()}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values, bucket)
  SELECT r.account_id, '{table}', {key}, '{tg_op[0]}', {old_values}, {S}.bucket_of({bucket}) FROM {rows} r;
  RETURN NULL;
END $$;""")
    return "\n".join(out)


def upgrade() -> None:
    """The bucket column, its function and triggers, and the partition counts."""
    op.execute(f"""
ALTER TABLE {S}.change_log ADD COLUMN bucket smallint;

CREATE OR REPLACE FUNCTION {S}.bucket_of(k text) RETURNS smallint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT (abs(hashtext(k)::bigint) % {BUCKETS})::smallint $$;

-- rows appended outside the capture functions: find the partition key behind the entity key
CREATE OR REPLACE FUNCTION {S}.fill_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.bucket := {S}.bucket_of(CASE NEW.entity
    WHEN 'events' THEN coalesce(
      (SELECT e.customer_id FROM public.events e WHERE e.account_id = NEW.account_id AND e.id = NEW.entity_key),
      NEW.entity_key)
    WHEN 'order_items' THEN (NEW.entity_key::jsonb) ->> 0
    ELSE NEW.entity_key END);
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS braze_sync_bucket ON {S}.change_log;
CREATE TRIGGER braze_sync_bucket BEFORE INSERT ON {S}.change_log
  FOR EACH ROW WHEN (NEW.bucket IS NULL AND NEW.entity IN ({", ".join(f"'{t}'" for t in PARTITIONED)}))
  EXECUTE FUNCTION {S}.fill_bucket();

CREATE TABLE {S}.partitions (
  entity      text NOT NULL,
  account_id  text NOT NULL,
  count       smallint NOT NULL CHECK (count BETWEEN 1 AND {BUCKETS}),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (entity, account_id)
);
""")
    for table, (key, bucket) in PARTITIONED.items():
        op.execute(_capture_sql(table, key, bucket))


def downgrade() -> None:
    """Back to 0001's capture functions; drop the bucket, its trigger and the partition counts."""
    base = import_module("masivo_braze_sync.db.migrations.versions.0001_sync_schema")
    for table in PARTITIONED:
        op.execute(base._capture_sql(table, base.CAPTURED[table]))
    op.execute(f"""
DROP TRIGGER IF EXISTS braze_sync_bucket ON {S}.change_log;
DROP FUNCTION IF EXISTS {S}.fill_bucket();
DROP TABLE IF EXISTS {S}.partitions;
ALTER TABLE {S}.change_log DROP COLUMN IF EXISTS bucket;
DROP FUNCTION IF EXISTS {S}.bucket_of(text);
""")
