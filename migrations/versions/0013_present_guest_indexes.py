"""present guest indexes: the guest list by name, its count and per-host totals

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

PRESENT = sa.text("gone_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_guests_present_name", ["name", "host_id"],
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        )  # fmt: skip
        batch_op.create_index(
            "ix_guests_present_totals", ["host_id", "state", "vcpus", "memory_max_kib"],
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        batch_op.drop_index("ix_guests_present_totals")
        batch_op.drop_index("ix_guests_present_name")
