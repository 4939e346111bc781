"""guest sort indexes: the Guests page sorted by host, state, vCPUs or memory in use

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

PRESENT = sa.text("gone_at IS NULL")
INDEXES = {
    "ix_guests_present_host": ["host_id", "name"],
    "ix_guests_present_state": ["state", "name", "host_id"],
    "ix_guests_present_vcpus": ["vcpus", "name", "host_id"],
    "ix_guests_present_memory": ["memory_current_kib", "name", "host_id"],
}


def upgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, sqlite_where=PRESENT, postgresql_where=PRESENT)


def downgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        for name in reversed(INDEXES):
            batch_op.drop_index(name)
