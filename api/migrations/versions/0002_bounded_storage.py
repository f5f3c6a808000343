"""bounded storage and closed exposure: trial-structure bases, per-job stored bytes, server-side sessions

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_structures",
        sa.Column("search_id", sa.String(64), primary_key=True),
        sa.Column("base", sa.Integer, primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("blocks", sa.LargeBinary, nullable=False),
    )
    with op.batch_alter_table("jobs") as b:
        b.add_column(sa.Column("stored_bytes", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("revoked_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    with op.batch_alter_table("jobs") as b:
        b.drop_column("stored_bytes")
    op.drop_table("search_structures")
