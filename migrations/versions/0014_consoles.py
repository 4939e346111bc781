"""consoles: single-use tickets, console sessions, a duration in the audit log, and a host's
console address

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("guest_uuid", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("takeover", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("used_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_console_tickets_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_tickets")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_console_tickets_secret_hash")),
    )
    op.create_index(op.f("ix_console_tickets_user_id"), "console_tickets", ["user_id"])
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guest_uuid", sa.String(length=36), nullable=False),
        sa.Column("guest_name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("seen_at", UTC, nullable=False),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("end_reason", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_guest_kind", "console_sessions", ["guest_uuid", "kind"])
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("console_address", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("console_address")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("duration_s")
    op.drop_index("ix_console_sessions_guest_kind", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index(op.f("ix_console_tickets_user_id"), table_name="console_tickets")
    op.drop_table("console_tickets")
