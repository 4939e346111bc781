"""backup schedules (daily or weekly, per guest, host or all, with a retention policy) and the
runs they claimed

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "backup_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("guest_uuid", sa.String(length=36), nullable=True),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.String(length=8), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=True),
        sa.Column("at_seconds", sa.Integer(), nullable=False),
        sa.Column("jitter_minutes", sa.Integer(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("keep_last", sa.Integer(), nullable=False),
        sa.Column("keep_daily", sa.Integer(), nullable=False),
        sa.Column("keep_weekly", sa.Integer(), nullable=False),
        sa.Column("keep_monthly", sa.Integer(), nullable=False),
        sa.Column("not_before", UTC, nullable=False),
        sa.Column("last_slot", UTC, nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
            name=op.f("fk_backup_schedules_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_backup_schedules_name")),
    )
    op.create_table(
        "backup_schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("slot", UTC, nullable=False),
        sa.Column("due_at", UTC, nullable=False),
        sa.Column("guest_uuid", sa.String(length=36), nullable=False),
        sa.Column("guest_name", sa.String(length=255), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("backup_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["backup_schedules.id"],
            name=op.f("fk_backup_schedule_runs_schedule_id_backup_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_id",
            "slot",
            "guest_uuid",
            name=op.f("uq_backup_schedule_runs_schedule_id_slot_guest_uuid"),
        ),
    )
    op.create_index(
        "ix_backup_schedule_runs_status_due_at", "backup_schedule_runs", ["status", "due_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_backup_schedule_runs_status_due_at", table_name="backup_schedule_runs")
    op.drop_table("backup_schedule_runs")
    op.drop_table("backup_schedules")
