"""Samples of what each running guest used, and of what a host's running guests used together:
one a reading (kept a day) and one an hour, the average of that hour's readings (kept 30 days)."""

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class UsageSample(Base):
    """A guest's CPU share of its vCPUs, memory in use, and disk and network bytes a second,
    over one reading's interval, or (hourly) averaged over the hour that begins at `at`."""

    __tablename__ = "usage_samples"
    __table_args__ = (
        Index("ix_usage_samples_guest_id_hourly_at", "guest_id", "hourly", "at"),
        Index("ix_usage_samples_hourly_at", "hourly", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guest_id: Mapped[int] = mapped_column(ForeignKey("guests.id", ondelete="CASCADE"))
    hourly: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_used_kib: Mapped[int | None] = mapped_column(BigInteger)
    disk_bps: Mapped[int] = mapped_column(BigInteger)
    net_bps: Mapped[int] = mapped_column(BigInteger)


class HostUsageSample(Base):
    """What a host's running guests used together over one reading's interval (or, hourly,
    on average over the hour that begins at `at`): CPUs' worth of time (a guest at 50 % of 4
    vCPUs counts 2), memory in use (None when no guest's is known), disk and network bytes a
    second, and how many guests had figures. Written with the guests' samples, so that the host
    page draws a row a reading rather than summing every guest's."""

    __tablename__ = "host_usage_samples"
    __table_args__ = (
        Index("ix_host_usage_samples_host_id_hourly_at", "host_id", "hourly", "at"),
        Index("ix_host_usage_samples_hourly_at", "hourly", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"))
    hourly: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    cpus_used: Mapped[float] = mapped_column(Float)
    memory_used_kib: Mapped[int | None] = mapped_column(BigInteger)
    disk_bps: Mapped[int] = mapped_column(BigInteger)
    net_bps: Mapped[int] = mapped_column(BigInteger)
    guests: Mapped[int] = mapped_column(Integer)
