"""worker process: sync requests and job inputs in the database, live topics for other
processes on SQLite, and each worker's figures for /metrics

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(
            sa.Column("sync_requested", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("sync_answered", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("inputs", sa.JSON(), nullable=True))
    op.create_table(
        "live_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topics", sa.Text(), nullable=False),
        sa.Column("created_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_live_outbox")),
    )
    op.create_table(
        "workers",
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("started_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", app.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_workers")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("live_outbox")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("inputs")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("sync_answered")
        batch.drop_column("sync_requested")
