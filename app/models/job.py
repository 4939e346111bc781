"""Long work (create with a new disk, backup, restore) runs as a job the UI and API can follow."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class Job(Base):
    """One piece of long work, its progress and its outcome."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # No foreign keys: a job's record outlives the host, guest or user it names.
    host_id: Mapped[int | None] = mapped_column(Integer)
    guest_uuid: Mapped[str | None] = mapped_column(String(36))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The instance running it, and when it last said so: a stale heartbeat means it died.
    owner: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by a cancel request (from any instance); the work stops at its next progress report.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What the work needs, as plain JSON: a worker process rebuilds the work from kind + inputs.
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
