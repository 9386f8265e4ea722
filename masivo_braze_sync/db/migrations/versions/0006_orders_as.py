"""Orders as eCommerce events: the per-account `orders_as` choice and the eCommerce events' ledger.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Masivo's table: installs whose braze_integrations predates the column (`db init --source`
    # creates it from db/models.py); null means `purchases`, today's behaviour
    op.execute("ALTER TABLE public.braze_integrations ADD COLUMN IF NOT EXISTS orders_as text")
    op.execute("""
CREATE TABLE braze_sync.order_events (
  account_id  text NOT NULL,
  order_id    text NOT NULL,
  -- the delivery key: <order id>/ecommerce.order_<placed|refunded|cancelled>/<line nos>
  key         text NOT NULL,
  event       text NOT NULL CHECK (event IN ('placed', 'refunded', 'cancelled')),
  customer_id text NOT NULL,
  currency    text NOT NULL,
  -- the lines the event carried, as sent: [{line_no, product_id, product_name, quantity, unit_price}]
  -- (a refund or cancellation is built from these values, never from the current lines)
  lines       jsonb NOT NULL,
  event_time  timestamptz NOT NULL,
  reason      text,          -- a refund or cancellation: REVERSED, CANCELLED, ORDER_DELETED, LINE_DELETED
  sent_at     timestamptz NOT NULL DEFAULT now(),
  -- each event once, however often the flow runs; the key names its lines, so each line is
  -- placed once and closed (refunded or cancelled) once
  PRIMARY KEY (account_id, order_id, key)
);
""")


def downgrade() -> None:
    op.execute("DROP TABLE braze_sync.order_events")
    op.execute("ALTER TABLE public.braze_integrations DROP COLUMN IF EXISTS orders_as")
