"""Backup schedules (which guests, when, how many at once per host, what to keep) and the runs
they claimed: one row per (schedule, slot, guest)."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

SCOPES = ("guest", "host", "all")
FREQUENCIES = ("daily", "weekly")
RUN_STATES = ("pending", "starting", "started", "failed")


class BackupSchedule(Base):
    """Back up a guest, a host's guests or all guests daily or weekly at a time (UTC)."""

    __tablename__ = "backup_schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    scope: Mapped[str] = mapped_column(String(8))
    guest_uuid: Mapped[str | None] = mapped_column(String(36))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    frequency: Mapped[str] = mapped_column(String(8))
    weekday: Mapped[int | None] = mapped_column(Integer)  # Monday 0 (weekly schedules)
    at_seconds: Mapped[int] = mapped_column(Integer)  # the time of day, UTC, in seconds
    jitter_minutes: Mapped[int] = mapped_column(Integer, default=0)
    max_parallel: Mapped[int] = mapped_column(Integer, default=1)
    keep_last: Mapped[int] = mapped_column(Integer, default=0)
    keep_daily: Mapped[int] = mapped_column(Integer, default=0)
    keep_weekly: Mapped[int] = mapped_column(Integer, default=0)
    keep_monthly: Mapped[int] = mapped_column(Integer, default=0)
    # Slots before this (when the timing was last set) never run: a new or moved schedule does
    # not catch up on times it did not have.
    not_before: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The latest slot an instance claimed: moving it forward is the claim (one instance wins).
    last_slot: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """One guest's backup for one slot of a schedule: pending until due (slot + its jitter) and
    its host has room, then started (with its backup) or failed (with why)."""

    __tablename__ = "backup_schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "slot", "guest_uuid"),
        Index("ix_backup_schedule_runs_status_due_at", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("backup_schedules.id", ondelete="CASCADE"))
    slot: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    guest_uuid: Mapped[str] = mapped_column(String(36))
    guest_name: Mapped[str] = mapped_column(String(255))
    host_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    claimed_by: Mapped[str] = mapped_column(String(128))
    backup_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
