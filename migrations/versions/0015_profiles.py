"""profiles: saved create choices (size, host and pool, base image, network, cloud-init user)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.Column("disk_size_gib", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("pool", sa.String(length=255), nullable=False),
        sa.Column("image_pool", sa.String(length=255), nullable=True),
        sa.Column("image_volume", sa.String(length=255), nullable=True),
        sa.Column("image_format", sa.String(length=8), nullable=True),
        sa.Column("image_mode", sa.String(length=8), nullable=True),
        sa.Column("network", sa.String(length=255), nullable=True),
        sa.Column("cloud_init_user", sa.String(length=32), nullable=True),
        sa.Column("ssh_keys", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_profiles_host_id_hosts"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
        sa.UniqueConstraint("name", name=op.f("uq_profiles_name")),
    )


def downgrade() -> None:
    op.drop_table("profiles")
