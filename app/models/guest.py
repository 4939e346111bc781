"""A guest (libvirt domain) as last seen on its host."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, utcnow
from app.models.host import Host

# Lists and totals read only present guests; these partial indexes hold just those rows, so a
# page of the guest list (by name or another column), its count and the per-host sums never read
# the table's wide rows (domain XML) of 25,000 guests. PostgreSQL orders by name from an index
# only when the index is partial: "gone_at IS NULL" in a column list is no equality it can order
# under.
PRESENT = text("gone_at IS NULL")


class Guest(Base):
    """One domain on one host; kept (marked gone) after it disappears."""

    __tablename__ = "guests"
    __table_args__ = (
        Index("uq_guests_host_id_uuid", "host_id", "uuid", unique=True),
        Index("ix_guests_uuid", "uuid"),
        Index("ix_guests_host_id_name", "host_id", "name"),
        Index(
            "ix_guests_present_name", "name", "host_id",
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        ),
        Index(
            "ix_guests_present_totals", "host_id", "state", "vcpus", "memory_max_kib",
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        ),
        # The Guests page sorted by a column: a page walks its index, never the wide rows.
        Index(
            "ix_guests_present_host", "host_id", "name",
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        ),
        *(
            Index(f"ix_guests_present_{key}", column, "name", "host_id",
                  sqlite_where=PRESENT, postgresql_where=PRESENT)
            for key, column in (
                ("state", "state"), ("vcpus", "vcpus"), ("memory", "memory_current_kib")
            )
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    uuid: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(255))
    # libvirt's state as last seen: running, blocked, paused, shutdown, shutoff, crashed,
    # pmsuspended, nostate.
    state: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_max_kib: Mapped[int] = mapped_column(BigInteger)
    memory_current_kib: Mapped[int] = mapped_column(BigInteger)
    autostart: Mapped[bool] = mapped_column(Boolean)
    persistent: Mapped[bool] = mapped_column(Boolean)
    disks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    nics: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    domain_xml: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a sync of a reachable host no longer finds the guest.
    gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When it was last seen while gone; present guests are seen at every host sync.
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # The database-wide per-guest lock: the action holding it and since when.
    busy_action: Mapped[str | None] = mapped_column(String(32))
    busy_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A change asked of libvirt that it does not report as a state, e.g. "shutting down".
    transition: Mapped[str | None] = mapped_column(String(32))
    transition_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    host: Mapped[Host] = relationship(lazy="raise")
