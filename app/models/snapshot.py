"""A guest's libvirt snapshot as last read from its host."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class Snapshot(Base):
    """One snapshot of one guest; removed when libvirt no longer lists it."""

    __tablename__ = "snapshots"
    __table_args__ = (Index("uq_snapshots_guest_id_name", "guest_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest_id: Mapped[int] = mapped_column(ForeignKey("guests.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    parent: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The guest's state when it was taken: running, shutoff, disk-snapshot, ...
    state: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    # External (overlay files) rather than internal (inside the qcow2 images).
    external: Mapped[bool] = mapped_column(Boolean, default=False)
    # Whether it holds the guest's memory state (a running guest resumes from it).
    memory: Mapped[bool] = mapped_column(Boolean, default=False)
