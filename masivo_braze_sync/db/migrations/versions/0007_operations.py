"""Operations: ledger statuses for requests that were never applied (`refused`, `unsent`).

A request Braze refused with 401/403, or one that never left because the account stopped first,
cannot have landed: unlike `unknown` (sent, answer lost), it is not a possible duplicate when the
batch is taken up again.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "braze_sync"
_BEFORE = "'pending', 'sending', 'delivered', 'rejected', 'unknown'"


def upgrade() -> None:
    """Allow `refused` and `unsent` in `deliveries.status`."""
    op.execute(f"""
ALTER TABLE {S}.deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE {S}.deliveries ADD CONSTRAINT deliveries_status_check
  CHECK (status IN ({_BEFORE}, 'refused', 'unsent'));
""")


def downgrade() -> None:
    """Back to the five statuses (refused/unsent rows become `unknown`)."""
    op.execute(f"""
ALTER TABLE {S}.deliveries DROP CONSTRAINT deliveries_status_check;
UPDATE {S}.deliveries SET status = 'unknown' WHERE status IN ('refused', 'unsent');
ALTER TABLE {S}.deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ({_BEFORE}));
""")
