"""Customers: what was last delivered per customer, field by field.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE braze_sync.customer_state (
  account_id    text NOT NULL,
  customer_id   text NOT NULL,
  -- field name -> short hash of the value last delivered (null values included): the next run
  -- sends only fields whose hash changed, and null for fields that disappeared
  field_hashes  jsonb NOT NULL DEFAULT '{}'::jsonb,
  first_sent_at timestamptz NOT NULL DEFAULT now(),
  last_sent_at  timestamptz NOT NULL DEFAULT now(),
  -- set when the /users/delete for this customer was delivered; a later un-delete starts over
  deleted_at    timestamptz,
  PRIMARY KEY (account_id, customer_id)
);
""")


def downgrade() -> None:
    op.execute("DROP TABLE braze_sync.customer_state")
