"""search profiles: the latency profile a search was submitted with, pinned to the job

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_profiles",
        sa.Column("search_id", sa.String(32), primary_key=True),
        sa.Column("checksum", sa.String(80), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("search_profiles")
