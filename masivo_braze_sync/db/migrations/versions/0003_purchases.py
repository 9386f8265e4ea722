"""Purchases: what was sent to Braze for each order line, per sign (the purchase and its reversal).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE braze_sync.purchase_lines (
  account_id    text NOT NULL,
  order_id      text NOT NULL,
  line_no       integer NOT NULL,
  -- '+' the purchase sent when the order was fulfilled, '-' its reversal (negative price)
  sign          char(1) NOT NULL CHECK (sign IN ('+', '-')),
  -- what Braze received: a reversal is built from these values, never from the current line
  customer_id   text NOT NULL,
  product_id    text NOT NULL,
  currency      text NOT NULL,
  unit_price    numeric NOT NULL,        -- the price sent, signed (negative for a reversal)
  quantity      integer NOT NULL,        -- the sum of the split
  split         jsonb NOT NULL,          -- part number -> quantity of that purchase (<= 100 each)
  purchase_time timestamptz NOT NULL,    -- the purchase's `time`
  reason        text,                    -- for a reversal: REVERSED, CANCELLED, ORDER_DELETED, LINE_DELETED
  sent_at       timestamptz NOT NULL DEFAULT now(),
  -- at most one purchase and one reversal per order line, however often the flow runs
  PRIMARY KEY (account_id, order_id, line_no, sign)
);
""")


def downgrade() -> None:
    op.execute("DROP TABLE braze_sync.purchase_lines")
