"""What a host offers new guests, read live: storage pools and volumes, networks, platform; and
which guests of the inventory use a pool's volumes."""

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import VirtdeckError
from app.models import Guest
from app.services.hosts import get_host
from app.services.ports import HostCalls
from app.services.states import RESOURCE_STATES
from app.virt import build
from app.virt import networks as virt_networks
from app.virt import volumes as virt_volumes
from app.virt.connection import HostConnection
from app.virt.cpu import CpuProbe, current, from_record


@dataclass(frozen=True)
class HostChoices:
    """What a host offers a new guest: storage pools and their volumes, networks, platform."""

    pools: list[virt_volumes.Pool]
    volumes: dict[str, list[virt_volumes.Volume]]  # of the active pools
    networks: list[virt_networks.Network]
    platform: build.Platform
    # Which CPU new guests get unless the form asks for another; None until the host's worker
    # has probed it (reading the form never starts QEMU).
    cpu: CpuProbe | None

    def media(self, *, iso: bool) -> list[tuple[str, list[virt_volumes.Volume]]]:
        """(pool, volumes) of ISO images (iso=True) or of other images; empty pools left out."""
        grouped = [(pool, [v for v in vols if v.iso == iso]) for pool, vols in self.volumes.items()]
        return [(pool, vols) for pool, vols in grouped if vols]


def _choices(conn: HostConnection, known_cpu: CpuProbe | None) -> HostChoices:
    pools = virt_volumes.list_pools(conn)
    platform = build.host_platform(conn)
    return HostChoices(
        pools=pools,
        volumes={p.name: virt_volumes.list_volumes(conn, p.name) for p in pools if p.active},
        networks=virt_networks.list_networks(conn),
        platform=platform,
        cpu=current(conn, platform, known=known_cpu),
    )


# What a host offers, as the API and pages show it.
Pool, Volume, Network = virt_volumes.Pool, virt_volumes.Volume, virt_networks.Network


def on_host(
    session: Session, sync: HostCalls, host_id: int, call: Callable[[HostConnection], Any]
) -> Any:
    """Call something on a registered host now (read or change it); HostUnreachable when it is
    not connected."""
    host = get_host(session, host_id)
    return sync.call(host.id, call)


def pools(session: Session, sync: HostCalls, host_id: int) -> list[Pool]:
    """The host's storage pools, read from it now."""
    return on_host(session, sync, host_id, virt_volumes.list_pools)


def file_pools(session: Session, sync: HostCalls, host_id: int) -> tuple[list[Pool], str | None]:
    """The host's pools new disk files can go to (active directory-like pools), read from it
    now; or none and why they cannot be read (a choice of pool on a page says so)."""
    try:
        found = pools(session, sync, host_id)
    except VirtdeckError as exc:
        return [], exc.message
    return [p for p in found if p.active and p.holds_qcow2], None


def volumes(session: Session, sync: HostCalls, *, host_id: int, pool: str) -> list[Volume]:
    """The volumes of one of the host's pools, read from it now."""
    return on_host(session, sync, host_id, lambda conn: virt_volumes.list_volumes(conn, pool))


def networks(session: Session, sync: HostCalls, host_id: int) -> list[Network]:
    """The host's virtual networks, read from it now."""
    return on_host(session, sync, host_id, virt_networks.list_networks)


def host_choices(session: Session, sync: HostCalls, host_id: int) -> HostChoices:
    """Everything the create form offers for this host, in one visit to it."""
    known_cpu = from_record(get_host(session, host_id).cpu_probe)
    return on_host(session, sync, host_id, lambda conn: _choices(conn, known_cpu))


def volume_users(
    session: Session, host_id: int, volumes: list[Volume], *, running: bool = False
) -> dict[str, list[str]]:
    """The names of the host's present guests (running ones: holding resources, with
    running) whose disks are each volume (by its name), from the inventory: a disk names its
    file, or its pool and volume."""
    by_path = {posixpath.normpath(v.path): v.name for v in volumes}
    by_ref = {(v.pool, v.name): v.name for v in volumes}
    users: dict[str, list[str]] = {}
    query = select(Guest.name, Guest.disks).where(Guest.host_id == host_id, Guest.gone_at.is_(None))
    if running:
        query = query.where(Guest.state.in_(RESOURCE_STATES))
    guests = session.execute(query.order_by(Guest.name))
    for name, disks in guests:
        for disk in disks:
            source = disk.get("source")
            volume = by_ref.get((disk.get("pool"), disk.get("volume"))) or (
                by_path.get(posixpath.normpath(source)) if source else None
            )
            if volume is not None and name not in users.setdefault(volume, []):
                users[volume].append(name)
    return users
