"""Live mode: change notifications and the customers consumer's caught-up horizon.

Revision ID: 0005
Revises: 0004
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the revision is reserved so that work in parallel keeps one linear chain."""


def downgrade() -> None:
    """Nothing to undo."""
