"""incremental backups: each backup's kind, parent, checkpoint, why it is full and what changed

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="full")
        )
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("checkpoint", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("full_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("changed_bytes", sa.BigInteger(), nullable=True))
        batch.create_index("ix_backups_parent_id", ["parent_id"])


def downgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.drop_index("ix_backups_parent_id")
        for column in ("changed_bytes", "full_reason", "checkpoint", "parent_id", "kind"):
            batch.drop_column(column)
