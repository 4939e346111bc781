"""host usage: what each host's running guests used together, a sample a reading and an hour

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_usage_samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "host_id", sa.Integer(), sa.ForeignKey("hosts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("hourly", sa.Boolean(), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("cpus_used", sa.Float(), nullable=False),
        sa.Column("memory_used_kib", sa.BigInteger(), nullable=True),
        sa.Column("disk_bps", sa.BigInteger(), nullable=False),
        sa.Column("net_bps", sa.BigInteger(), nullable=False),
        sa.Column("guests", sa.Integer(), nullable=False),
    )  # fmt: skip
    op.create_index(
        "ix_host_usage_samples_host_id_hourly_at", "host_usage_samples",
        ["host_id", "hourly", "at"],
    )  # fmt: skip
    op.create_index("ix_host_usage_samples_hourly_at", "host_usage_samples", ["hourly", "at"])
    # The samples kept so far, summed once here, so that the host charts keep their history.
    op.execute(
        "INSERT INTO host_usage_samples (host_id, hourly, at, cpus_used, memory_used_kib, "
        "disk_bps, net_bps, guests) "
        "SELECT g.host_id, s.hourly, s.at, SUM(s.cpu_percent * g.vcpus / 100.0), "
        "SUM(s.memory_used_kib), SUM(s.disk_bps), SUM(s.net_bps), COUNT(*) "
        "FROM usage_samples s JOIN guests g ON g.id = s.guest_id "
        "GROUP BY g.host_id, s.hourly, s.at"
    )


def downgrade() -> None:
    op.drop_table("host_usage_samples")
