"""guest usage: each running guest's latest CPU, memory, disk and network use, and samples of it

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

COLUMNS = (
    ("cpu_percent", sa.Float()),
    ("memory_used_kib", sa.BigInteger()),
    ("memory_source", sa.String(length=8)),
    ("disk_bps", sa.BigInteger()),
    ("net_bps", sa.BigInteger()),
    ("usage_at", UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
    op.create_table(
        "usage_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "guest_id", sa.Integer(), sa.ForeignKey("guests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("hourly", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("memory_used_kib", sa.BigInteger(), nullable=True),
        sa.Column("disk_bps", sa.BigInteger(), nullable=False),
        sa.Column("net_bps", sa.BigInteger(), nullable=False),
    )  # fmt: skip
    op.create_index(
        "ix_usage_samples_guest_id_hourly_at", "usage_samples", ["guest_id", "hourly", "at"]
    )
    op.create_index("ix_usage_samples_hourly_at", "usage_samples", ["hourly", "at"])


def downgrade() -> None:
    op.drop_table("usage_samples")
    with op.batch_alter_table("guests", schema=None) as batch_op:
        for name, _type in reversed(COLUMNS):
            batch_op.drop_column(name)
