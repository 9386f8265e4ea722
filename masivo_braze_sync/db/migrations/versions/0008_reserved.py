"""Reserved.

Revision ID: 0008
Revises: 0007
"""

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the revision is reserved so that work in parallel keeps one linear chain."""


def downgrade() -> None:
    """Nothing to undo."""
