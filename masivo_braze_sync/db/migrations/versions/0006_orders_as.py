"""Orders as eCommerce events: the per-account `orders_as` choice.

Revision ID: 0006
Revises: 0005
"""

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the revision is reserved so that work in parallel keeps one linear chain."""


def downgrade() -> None:
    """Nothing to undo."""
