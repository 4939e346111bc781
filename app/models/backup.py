"""A backup of a guest: its files in the backup directory and how making them went."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

BACKUP_STATES = ("running", "succeeded", "failed", "cancelled", "corrupt")


class Backup(Base):
    """One backup: a record outlives its guest and host, so it names them instead of linking."""

    __tablename__ = "backups"
    __table_args__ = (
        Index("ix_backups_guest_uuid_started_at", "guest_uuid", "started_at"),
        Index("ix_backups_status", "status"),
        Index("ix_backups_host_id", "host_id"),
        Index("ix_backups_parent_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(Integer)
    host_name: Mapped[str] = mapped_column(String(64))
    guest_uuid: Mapped[str] = mapped_column(String(36))
    guest_name: Mapped[str] = mapped_column(String(255))
    started_by: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    # The guest's state when the backup began: running (push-mode job) or shut off (volume copy).
    guest_state: Mapped[str] = mapped_column(String(16), default="")
    # The directory under the backup directory: <host>/<guest uuid>/<UTC time>.
    path: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    job_id: Mapped[int | None] = mapped_column(Integer)
    # The manifest's file list: name, kind, target, format, size, and the digest under its
    # algorithm's name (sha256 or blake3); a disk's also has its volume's path, pool and capacity
    # (since 0009), and one kept as extents or a delta its extents.
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # sha256 of manifest.json's bytes; a restore or verify refuses a manifest that differs.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    # full, or incremental: only the blocks changed since its parent's checkpoint (since 0017).
    kind: Mapped[str] = mapped_column(String(16), default="full")
    # The backup an incremental one builds on; a restore of it needs every ancestor.
    parent_id: Mapped[int | None] = mapped_column(Integer)
    # The libvirt checkpoint this backup began (its name on the host), which the next
    # incremental backup reads the changes since; None when it began none (a shut-off guest).
    checkpoint: Mapped[str | None] = mapped_column(String(64))
    # Why a backup is full when an incremental one could have been expected (shown in history).
    full_reason: Mapped[str | None] = mapped_column(Text)
    # An incremental backup's changed bytes (the dirty extents it copied), summed over disks.
    changed_bytes: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def duration_seconds(self) -> float | None:
        """How long it took (None while it runs)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
