"""A guest (libvirt domain) as last seen on its host."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, UTCDateTime, utcnow
from app.models.host import Host

# Lists and totals read only present guests; these partial indexes hold just those rows, so a
# page of the guest list (by name or another column), its count and the per-host sums never read
# the table's wide rows (domain XML) of 25,000 guests. PostgreSQL orders by name from an index
# only when the index is partial: "gone_at IS NULL" in a column list is no equality it can order
# under.
PRESENT = text("gone_at IS NULL")
# The sort keys of the two columns that may be NULL, as index expressions either database orders
# alike (each puts NULL at another end): a guest not running uses no CPU (-1, first up), and has
# been up for no time (first up: the shortest uptime is the latest start, so the start sorts the
# other way). app.services.guests sorts by these very texts, so that either database finds them.
CPU_SORT = text("coalesce(cpu_percent, -1.0)")
NOT_UP = text("(running_since IS NULL)")


class Guest(Base):
    """One domain on one host; kept (marked gone) after it disappears."""

    __tablename__ = "guests"
    __table_args__ = (
        Index("uq_guests_host_id_uuid", "host_id", "uuid", unique=True),
        Index("ix_guests_uuid", "uuid"),
        Index("ix_guests_host_id_name", "host_id", "name"),
        # The name order. A tag filter or a search by name reads names and tags from it too,
        # never the wide rows: SQLite stores tags after the domain XML, and a LIKE with a
        # leading % uses no index range on either database. gone_at makes it covering on SQLite
        # (which reads a partial index's condition from the table).
        Index(
            "ix_guests_present_name", "name", "host_id", "tags", "gone_at",
            sqlite_where=PRESENT, postgresql_where=PRESENT,
        ),
        # Each host's sums (the overview); covering on SQLite with gone_at, as above (without
        # it SQLite read 25,000 rows from the table: 30 ms of the overview's 50).
        Index(
            "ix_guests_present_totals", "host_id", "state", "vcpus", "memory_max_kib", "gone_at",
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
                ("state", "state"), ("vcpus", "vcpus"), ("memory", "memory_current_kib"),
                ("cpu", CPU_SORT),
            )
        ),
        # Which guests of a host are due a read of their addresses (app.services.addresses).
        Index("ix_guests_present_addresses", "host_id", "state", "addresses_at",
              "running_since", "gone_at", sqlite_where=PRESENT, postgresql_where=PRESENT),
        Index("ix_guests_present_uptime", text("(running_since IS NULL) DESC"),
              text("running_since DESC"), "name", "host_id",
              sqlite_where=PRESENT, postgresql_where=PRESENT),
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
    # What it used over the last reading's interval while running (app.services.usage): CPU
    # time as a share of its vCPUs, memory in use (as the guest or, without its figures, the
    # host sees it: memory_source), bytes a second its disks read and wrote and its interfaces
    # moved; None when stopped or unread.
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_used_kib: Mapped[int | None] = mapped_column(BigInteger)
    memory_source: Mapped[str | None] = mapped_column(String(8))
    disk_bps: Mapped[int | None] = mapped_column(BigInteger)
    net_bps: Mapped[int | None] = mapped_column(BigInteger)
    usage_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last lifecycle action that failed (libvirt's words), kept until one succeeds.
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_action: Mapped[str | None] = mapped_column(String(32))
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its tags (app.services.tag_rules), read from its domain XML's metadata at each sync: one
    # space between each and around them all (" db prod "), so that a tag filter is one LIKE
    # on either database; None when it has none.
    tags: Mapped[str | None] = mapped_column(String(600))
    # Since when it has been up (its QEMU process held resources), as the inventory saw it:
    # when a sync or event found it started, or, already up when first seen, then; None while
    # it is off (app.services.inventory).
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Its IP addresses as the worker last read them while it was up (app.services.addresses):
    # [{"address", "prefix", "interface", "mac", "source"}], and when; None when never read.
    addresses: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    addresses_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    host: Mapped[Host] = relationship(lazy="raise")


# A running guest's current use (see above): all cleared at once when it stops or its host is
# lost, so that no figure is shown as current once nobody reads it.
USAGE_CLEARED: dict[str, None] = dict.fromkeys(
    ("cpu_percent", "memory_used_kib", "memory_source", "disk_bps", "net_bps", "usage_at")
)
