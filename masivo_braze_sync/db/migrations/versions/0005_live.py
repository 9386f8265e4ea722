"""Live mode: change notifications and the caught-up horizons.

Revision ID: 0005
Revises: 0004

- Every statement that appends to `change_log` (the capture triggers of 0001/0004, `sync --full`,
  `retry-rejected`) also sends one `pg_notify` per (entity, account) pair it wrote, on the channel
  `masivo_braze_sync`, with a JSON payload `{"entity": <source table>, "account": <account id>}`:
  ids only, never row data. One statement-level trigger on the log does it, so the capture
  functions stay as they are. Postgres delivers the notification when the writer commits, and
  drops it with a rollback (docs/live.md#wake-ups).
- `caught_up`: per consumer and account, the horizon below which that consumer had nothing left
  the last time it looked (docs/live.md#profile-before-event). Other consumers of the account read
  only below it.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "braze_sync"
CHANNEL = "masivo_braze_sync"


def upgrade() -> None:
    """The notify trigger on the change log and the caught-up table."""
    op.execute(f"""
CREATE TABLE {S}.caught_up (
  consumer    text NOT NULL,
  account_id  text NOT NULL,
  horizon     xid8 NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, account_id)
);

CREATE OR REPLACE FUNCTION {S}.notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- identical payloads in one transaction are delivered once: a bulk write is one wake-up
  PERFORM pg_notify('{CHANNEL}', json_build_object('entity', c.entity, 'account', c.account_id)::text)
  FROM (SELECT DISTINCT entity, account_id FROM new_rows) c;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS braze_sync_notify ON {S}.change_log;
CREATE TRIGGER braze_sync_notify AFTER INSERT ON {S}.change_log
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION {S}.notify_changes();
""")


def downgrade() -> None:
    """Drop the trigger, its function and the caught-up table."""
    op.execute(f"""
DROP TRIGGER IF EXISTS braze_sync_notify ON {S}.change_log;
DROP FUNCTION IF EXISTS {S}.notify_changes();
DROP TABLE IF EXISTS {S}.caught_up;
""")
