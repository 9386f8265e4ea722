"""Audiences: capture that keeps what the audiences sync needs in the change log.

Revision ID: 0004
Revises: 0003

An audience change (rename, soft delete or un-delete, hard delete, id change) is one row in
`audiences` but one Braze attribute update per member. The capture fans it out here, in the writing
transaction: one `audience_members` change-log row per member *at that moment*, carrying in
`old_values.audience_name` the name whose attribute may have to be nulled. The sync then reads the
members like any other change, in `batch_rows` slices (memory bounded by the batch, not by the
audience), and needs no second pass over `audience_members` at sync time.

- `audiences` UPDATE keeps the old row in `old_values` (0001 stored NULL); a row whose key changed
  is logged as a delete of the old key.
- `audiences` INSERT / UPDATE / DELETE fan out to the members of audiences that appeared, were
  renamed, were (un-)deleted or disappeared.
- `audience_members` DELETE (and an UPDATE that changes the key) records the audience's name at that
  moment, so a member removed in the same transaction as a hard delete of its audience (or before a
  rename) can still be nulled under the right attribute.

The cost is on the writer: deleting or renaming an audience of N members writes N change-log rows
(as deleting N member rows already does).
"""

from importlib import import_module

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "braze_sync"
MEMBER_KEY = "jsonb_build_array(m.audience_id, m.customer_id)::text"

# members of audiences whose attribute may have changed: `t` is (account_id, id, name), name being
# the attribute to null if it no longer holds (NULL when the audience is new to that key)
_FAN_OUT = f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT m.account_id, 'audience_members', {MEMBER_KEY}, 'U', jsonb_build_object('audience_name', t.name)
  FROM touched t
  JOIN public.audience_members m ON m.account_id = t.account_id AND m.audience_id = t.id;"""


def _function(name: str, body: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {S}.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{body}
  RETURN NULL;
END $$;"""


def _trigger(table: str, tg_op: str, referencing: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS braze_sync_capture_{tg_op.lower()} ON public.{table};
CREATE TRIGGER braze_sync_capture_{tg_op.lower()} AFTER {tg_op} ON public.{table}
  REFERENCING {referencing}
  FOR EACH STATEMENT EXECUTE FUNCTION {S}.capture_{table}_{tg_op.lower()}();"""


AUDIENCES_INSERT = _function(
    "capture_audiences_insert",
    f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT r.account_id, 'audiences', r.id, 'I', NULL FROM new_rows r;
  -- members recorded before their audience existed
  WITH touched AS (SELECT r.account_id, r.id, NULL::text AS name FROM new_rows r){_FAN_OUT}""",
) + _trigger("audiences", "INSERT", "NEW TABLE AS new_rows")

AUDIENCES_UPDATE = _function(
    "capture_audiences_update",
    f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT n.account_id, 'audiences', n.id, 'U', to_jsonb(o)
  FROM new_rows n LEFT JOIN old_rows o ON o.account_id = n.account_id AND o.id = n.id;
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT o.account_id, 'audiences', o.id, 'D', to_jsonb(o)
  FROM old_rows o
  WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.account_id = o.account_id AND n.id = o.id);
  WITH touched AS (
    SELECT o.account_id, o.id, o.name
    FROM old_rows o LEFT JOIN new_rows n ON n.account_id = o.account_id AND n.id = o.id
    WHERE n.id IS NULL OR n.name IS DISTINCT FROM o.name OR (n.deleted_at IS NULL) <> (o.deleted_at IS NULL)
    UNION ALL
    SELECT n.account_id, n.id, NULL::text
    FROM new_rows n
    WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.account_id = n.account_id AND o.id = n.id)
  ){_FAN_OUT}""",
) + _trigger("audiences", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows")

AUDIENCES_DELETE = _function(
    "capture_audiences_delete",
    f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT r.account_id, 'audiences', r.id, 'D', to_jsonb(r) FROM old_rows r;
  WITH touched AS (SELECT r.account_id, r.id, r.name FROM old_rows r){_FAN_OUT}""",
) + _trigger("audiences", "DELETE", "OLD TABLE AS old_rows")

_SAME_MEMBER = "n.account_id = o.account_id AND n.audience_id = o.audience_id AND n.customer_id = o.customer_id"
_WITH_NAME = """
  SELECT o.account_id, 'audience_members', jsonb_build_array(o.audience_id, o.customer_id)::text, 'D',
         to_jsonb(o) || jsonb_build_object('audience_name', a.name)
  FROM old_rows o
  LEFT JOIN public.audiences a ON a.account_id = o.account_id AND a.id = o.audience_id"""

MEMBERS_UPDATE = _function(
    "capture_audience_members_update",
    f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values)
  SELECT n.account_id, 'audience_members', jsonb_build_array(n.audience_id, n.customer_id)::text, 'U', to_jsonb(o)
  FROM new_rows n LEFT JOIN old_rows o ON {_SAME_MEMBER};
  -- a changed key: the old membership ended
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values){_WITH_NAME}
  WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE {_SAME_MEMBER});""",
) + _trigger("audience_members", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows")

MEMBERS_DELETE = _function(
    "capture_audience_members_delete",
    f"""
  INSERT INTO {S}.change_log (account_id, entity, entity_key, op, old_values){_WITH_NAME};""",
) + _trigger("audience_members", "DELETE", "OLD TABLE AS old_rows")


def upgrade() -> None:
    for sql in (AUDIENCES_INSERT, AUDIENCES_UPDATE, AUDIENCES_DELETE, MEMBERS_UPDATE, MEMBERS_DELETE):
        op.execute(sql)


def downgrade() -> None:
    # back to 0001's capture for both tables (same functions and triggers, recreated)
    base = import_module("masivo_braze_sync.db.migrations.versions.0001_sync_schema")
    for table in ("audiences", "audience_members"):
        op.execute(base._capture_sql(table, base.CAPTURED[table]))
