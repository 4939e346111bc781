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
    # The manifest's file list: name, kind, target, format, size, sha256; a disk's also has its
    # volume's path, pool and capacity (since 0009).
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # sha256 of manifest.json's bytes; a restore or verify refuses a manifest that differs.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))

    @property
    def kind(self) -> str:
        """full or incremental: every backup is full until incremental ones are recorded."""
        return "full"

    @property
    def parent_id(self) -> int | None:
        """The backup an incremental one builds on (a full one has none)."""
        return None

    @property
    def duration_seconds(self) -> float | None:
        """How long it took (None while it runs)."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
