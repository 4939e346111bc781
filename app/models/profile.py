"""Saved create profiles: what a new guest gets, so that the next create is one click."""

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Profile(Base):
    """A named set of create choices: size, host and pool, base image, network and the
    cloud-init user with SSH keys (never a password)."""

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_size_gib: Mapped[int] = mapped_column(Integer)
    # None: the create names the host; a removed host leaves the profile without one.
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"))
    pool: Mapped[str] = mapped_column(String(255))
    # The base image (pool, volume, its format raw|qcow2, mode copy|overlay); None: an empty disk.
    image_pool: Mapped[str | None] = mapped_column(String(255))
    image_volume: Mapped[str | None] = mapped_column(String(255))
    image_format: Mapped[str | None] = mapped_column(String(8))
    image_mode: Mapped[str | None] = mapped_column(String(8))
    network: Mapped[str | None] = mapped_column(String(255))
    cloud_init_user: Mapped[str | None] = mapped_column(String(32))
    ssh_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
