"""A libvirt host and what we know of it."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Host(Base):
    """A registered libvirt connection URI with its facts and connection state."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(String(512), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Where virtdeck reaches the VNC servers of a qemu+tcp/tls host's guests (libvirt has no
    # tunnel there); none: no graphical console for such a host.
    console_address: Mapped[str | None] = mapped_column(String(255))

    # connecting | connected | unreachable
    connection: Mapped[str] = mapped_column(String(16), default="connecting")
    last_error: Mapped[str | None] = mapped_column(Text)
    unreachable_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_contact_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sync_ms: Mapped[float | None] = mapped_column()
    # The last complete read of every guest's XML (a reconcile); the syncs between read less.
    last_reconcile_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    hostname: Mapped[str | None] = mapped_column(String(255))
    hypervisor: Mapped[str | None] = mapped_column(String(32))
    hypervisor_version: Mapped[str | None] = mapped_column(String(32))
    libvirt_version: Mapped[str | None] = mapped_column(String(32))
    cpu_model: Mapped[str | None] = mapped_column(String(128))
    cpus_online: Mapped[int | None] = mapped_column(Integer)
    memory_kib: Mapped[int | None] = mapped_column(BigInteger)
    memory_source: Mapped[str | None] = mapped_column(String(128))
    kvm_available: Mapped[bool | None] = mapped_column(Boolean)
    # Which CPU QEMU starts new guests with here, and why (app.virt.cpu.CpuProbe.as_record).
    cpu_probe: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # Overcommit: this host's own allowed ratios (None: the global policy), and the latest
    # memory, KSM and guest balloon readings of its worker (see app.virt.overcommit). Those
    # readings load only when read: with 500 guests they are 57 kB of JSON a host, and every page
    # that lists hosts (a choice of host, the overview) spent most of its time decoding them.
    policy_cpu: Mapped[float | None] = mapped_column(Float)
    policy_memory: Mapped[float | None] = mapped_column(Float)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)
    stats_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which virtdeck instance syncs this host, until when (renewed; another takes it after).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A sync asked for by a web process (a counter it raises) and the highest request a worker
    # has answered: the web process and the worker may be different processes.
    sync_requested: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sync_answered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
