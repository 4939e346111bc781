"""Overcommit policy (one global row) and the samples of each host's allocation ratios."""

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class OvercommitPolicy(Base):
    """The allowed allocation ratios for every host without its own; a single row (id 1)."""

    __tablename__ = "overcommit_policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cpu_ratio: Mapped[float] = mapped_column(Float)
    memory_ratio: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OvercommitSample(Base):
    """A host's running allocation ratios at one moment, kept for a day."""

    __tablename__ = "overcommit_samples"
    __table_args__ = (Index("ix_overcommit_samples_host_id_at", "host_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cpu_ratio: Mapped[float | None] = mapped_column(Float)
    memory_ratio: Mapped[float | None] = mapped_column(Float)
