"""Operations: run history and retention columns.

Revision ID: 0007
Revises: 0006
"""

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet: the revision is reserved so that work in parallel keeps one linear chain."""


def downgrade() -> None:
    """Nothing to undo."""
