"""backups and job cancel

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("host_name", sa.String(length=64), nullable=False),
        sa.Column("guest_uuid", sa.String(length=36), nullable=False),
        sa.Column("guest_name", sa.String(length=255), nullable=False),
        sa.Column("started_by", sa.String(length=64), nullable=True),
        sa.Column("started_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("guest_state", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("verified_at", app.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )
    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_backups_guest_uuid_started_at", ["guest_uuid", "started_at"], unique=False
        )
        batch_op.create_index("ix_backups_host_id", ["host_id"], unique=False)
        batch_op.create_index("ix_backups_status", ["status"], unique=False)

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")

    with op.batch_alter_table("backups", schema=None) as batch_op:
        batch_op.drop_index("ix_backups_status")
        batch_op.drop_index("ix_backups_host_id")
        batch_op.drop_index("ix_backups_guest_uuid_started_at")

    op.drop_table("backups")
