"""What the web processes and the worker processes tell each other through the database: live
topics (on SQLite, where there is no NOTIFY) and each worker's figures for /metrics."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class LiveOutbox(Base):
    """Topics one process committed, for the event streams of the others (SQLite only)."""

    __tablename__ = "live_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topics: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkerRecord(Base):
    """A running `virtdeck worker`: when it last said so, and its figures per host."""

    __tablename__ = "workers"

    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
