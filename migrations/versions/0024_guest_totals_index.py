"""guest totals index covering on SQLite: gone_at in ix_guests_present_totals, so the overview's
per-host sums read the index alone (SQLite reads a partial index's condition from the table)

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

PRESENT = sa.text("gone_at IS NULL")
TOTALS = ["host_id", "state", "vcpus", "memory_max_kib"]


def _totals_index(columns: list[str]) -> None:
    op.drop_index("ix_guests_present_totals", table_name="guests")
    op.create_index("ix_guests_present_totals", "guests", columns,
                    sqlite_where=PRESENT, postgresql_where=PRESENT)  # fmt: skip


def upgrade() -> None:
    _totals_index([*TOTALS, "gone_at"])


def downgrade() -> None:
    _totals_index(TOTALS)
