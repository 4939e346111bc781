"""guest uptime and addresses: when each guest came up and its last read IP addresses; indexes
for the Guests page sorted by CPU or uptime, and tags in the name order's index (a tag filter)

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

PRESENT = sa.text("gone_at IS NULL")
# libvirt's states in which a guest's QEMU process holds its resources (GuestState).
UP_STATES = ("running", "blocked", "paused", "shutdown", "pmsuspended")
INDEXES = {
    "ix_guests_present_addresses": ["host_id", "state", "addresses_at", "running_since", "gone_at"],
    "ix_guests_present_cpu": [sa.text("coalesce(cpu_percent, -1.0)"), "name", "host_id"],
    "ix_guests_present_uptime": [
        sa.text("(running_since IS NULL) DESC"),
        sa.text("running_since DESC"),
        "name",
        "host_id",
    ],
}


def upgrade() -> None:
    with op.batch_alter_table("guests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("running_since", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("addresses", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("addresses_at", UTCDateTime(timezone=True), nullable=True))
    # A guest up now has been so at least since its row last changed (a start changes it): the
    # uptime shown is never more than it is.
    guests = sa.table("guests", sa.column("running_since"), sa.column("changed_at"),
                      sa.column("state"))  # fmt: skip
    op.execute(
        guests.update()
        .where(guests.c.state.in_(UP_STATES))
        .values(running_since=guests.c.changed_at)
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "guests", columns, sqlite_where=PRESENT, postgresql_where=PRESENT)
    # The name order's index holds tags too: a tag filter or a search then reads no wide row.
    op.drop_index("ix_guests_present_name", table_name="guests")
    op.create_index("ix_guests_present_name", "guests", ["name", "host_id", "tags", "gone_at"],
                    sqlite_where=PRESENT, postgresql_where=PRESENT)  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_guests_present_name", table_name="guests")
    op.create_index("ix_guests_present_name", "guests", ["name", "host_id"],
                    sqlite_where=PRESENT, postgresql_where=PRESENT)  # fmt: skip
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="guests")
    with op.batch_alter_table("guests", schema=None) as batch_op:
        batch_op.drop_column("addresses_at")
        batch_op.drop_column("addresses")
        batch_op.drop_column("running_since")
