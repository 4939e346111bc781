"""Change a guest's hardware: add a new or an existing disk, detach one, grow one (never shrink),
attach and detach NICs, insert or eject a CD-ROM's image. Each change is checked on the host
first (pools, formats given and never guessed, free MACs and volumes), runs under the guest's
lock, is live where the guest runs, and leaves nothing made on the host when it fails."""

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.errors import Conflict, Invalid, NotFound, VirtdeckError
from app.models import Guest
from app.services.guest_actions import guest_lock
from app.services.guest_create.on_host import attachable, check_new_disk, existing_network
from app.services.guest_create.request import MAX_DISK_GIB, MAX_REF, NewDisk, VolumeRef
from app.services.guests import get_guest
from app.services.hosts import require_connected
from app.services.inventory import record_guest
from app.services.ports import HostCalls
from app.virt import devices, volumes
from app.virt.connection import HostConnection
from app.virt.devices import DiskView, Hardware, NicView

T = TypeVar("T")
GIB = volumes.GIB
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
TARGET = re.compile(r"(vd|sd|hd|xvd)[a-z]{1,2}")
# Linux interface names: at most 15 characters, no '/' or spaces.
BRIDGE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}")
NIC_MODELS = ("virtio", "e1000e", "e1000", "rtl8139")

__all__ = ["NIC_MODELS", "DiskView", "Hardware", "NicView"]


@dataclass(frozen=True)
class Changed:
    """What a hardware change did: whether on the running guest, and what it names."""

    guest: Guest
    live: bool
    # A live detach the guest has not completed yet (its config no longer has the device).
    pending: bool = False
    target: str | None = None
    mac: str | None = None
    volume: str | None = None


def hardware(sync: HostCalls, guest: Guest) -> Hardware:
    """The guest's disks, drives and NICs as its host has them now."""
    return sync.call(guest.host_id, lambda conn: devices.read_hardware(conn, guest.uuid))


def _change(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    uuid: str,
    work: Callable[[HostConnection, Guest], T],
) -> tuple[Guest, T]:
    """Run work on the guest's host under its lock, then record the guest as it is now."""
    with sessions() as session:
        guest = get_guest(session, uuid)
        require_connected(guest.host)
    with guest_lock(sessions, guest, "hardware"):
        done = sync.call(guest.host_id, lambda conn: work(conn, guest))
        after = sync.call(guest.host_id, lambda conn: conn.guest(uuid))
        with transaction(sessions) as session:
            record_guest(session, guest.host_id, after)
    with sessions() as session:
        return get_guest(session, uuid), done


def check_target(target: str) -> None:
    """Invalid unless target looks like a disk target (vda, sdb, hdc, ...)."""
    if not TARGET.fullmatch(target):
        raise Invalid("target: a disk target such as vdb or sda", field="target")


def _check_unused(conn: HostConnection, path: str, volume: str) -> None:
    """Conflict when a guest on the host (this one too) already has the volume as a disk."""
    user = devices.disk_users(conn).get(path)
    if user is not None:
        raise Conflict(
            f"disk.volume: '{volume}' is already a disk of guest {user}", field="disk.volume"
        )


def _free_volume_name(conn: HostConnection, pool: str, guest_name: str, target: str) -> str:
    """A volume name free in the pool for the guest's new disk: <guest>-<target>.qcow2."""
    name, number = f"{guest_name}-{target}.qcow2", 1
    while volumes.volume_exists(conn, pool, name):
        number += 1
        name = f"{guest_name}-{target}-{number}.qcow2"
    return name


def add_disk(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, disk: NewDisk | VolumeRef
) -> Changed:
    """Attach a new qcow2 volume, or an existing volume in the format given, as the guest's next
    virtio disk; a new volume is removed again if the attach fails."""
    if not disk.pool or len(disk.pool) > MAX_REF:
        raise Invalid("disk.pool: choose a storage pool", field="disk.pool")
    if isinstance(disk, NewDisk) and not 1 <= disk.size_gib <= MAX_DISK_GIB:
        raise Invalid(
            f"disk.size_gib: a whole number of GiB from 1 to {MAX_DISK_GIB}", field="disk.size_gib"
        )
    if isinstance(disk, VolumeRef) and disk.format not in ("raw", "qcow2"):
        raise Invalid("disk.format: raw or qcow2", field="disk.format")

    def work(conn: HostConnection, guest: Guest) -> tuple[str, str, bool]:
        target = devices.free_target(conn, uuid)
        if isinstance(disk, VolumeRef):
            source = attachable(conn, disk, "disk")
            _check_unused(conn, source.path, disk.volume)
            live = devices.attach_disk(
                conn, uuid, path=source.path, kind=source.kind, fmt=source.format, target=target
            )
            return target, disk.volume, live
        name = _free_volume_name(conn, disk.pool, guest.name, target)
        check_new_disk(conn, disk, name)
        made = volumes.create_volume(conn, disk.pool, name, capacity=disk.size_gib * GIB)
        try:
            live = devices.attach_disk(
                conn, uuid, path=made.path, kind="file", fmt="qcow2", target=target
            )
        except BaseException:
            with contextlib.suppress(VirtdeckError):  # the attach's refusal is what counts
                volumes.delete_volume(conn, disk.pool, name)
            raise
        return target, name, live

    guest, (target, volume, live) = _change(sessions, sync, uuid, work)
    return Changed(guest, live=live, target=target, volume=volume)


def detach_disk(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, target: str
) -> Changed:
    """Detach disk `target` from the guest (live and in its config); its volume is kept."""
    check_target(target)

    def work(conn: HostConnection, _guest: Guest) -> bool | None:
        try:
            return devices.detach(conn, uuid, path="devices/disk", match=devices.disk_at(target))
        except NotFound as exc:
            raise NotFound(f"target: the guest has no disk {target}", field="target") from exc

    guest, released = _change(sessions, sync, uuid, work)
    return Changed(guest, live=released is not None, pending=released is False, target=target)


def grow_disk(
    sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, target: str, size_gib: int
) -> Changed:
    """Grow disk `target` to size_gib GiB: live in a running guest (block resize), else its
    volume. A size at or below the present one is refused: disks never shrink."""
    check_target(target)
    if not 1 <= size_gib <= MAX_DISK_GIB:
        raise Invalid(f"size_gib: a whole number of GiB from 1 to {MAX_DISK_GIB}", field="size_gib")

    def work(conn: HostConnection, _guest: Guest) -> bool:
        return devices.grow_disk(conn, uuid, target=target, size=size_gib * GIB)

    guest, live = _change(sessions, sync, uuid, work)
    return Changed(guest, live=live, target=target)


def check_mac(mac: str) -> str:
    """The MAC in lower case, or Invalid: six hex pairs, a unicast address."""
    mac = mac.strip().lower()
    if not MAC.fullmatch(mac):
        raise Invalid("mac: six hex pairs separated by ':', e.g. 52:54:00:12:34:56", field="mac")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise Invalid("mac: a multicast or zero address cannot be a NIC's", field="mac")
    return mac


def _check_network(conn: HostConnection, name: str, *, running: bool) -> None:
    network = existing_network(conn, name)
    if running and not network.active:
        raise Conflict(
            f"network: '{name}' is not active; start it to attach a NIC to the running guest",
            field="network",
        )


def attach_nic(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    network: str | None = None,
    bridge: str | None = None,
    mac: str | None = None,
    model: str = "virtio",
) -> Changed:
    """Attach a NIC on a network or a bridge, with the MAC given (free on the host) or a new
    one; live where the guest runs."""
    if (network is None) == (bridge is None):
        raise Invalid("network: give a network or a bridge, one of them", field="network")
    if network is not None and (not network or len(network) > MAX_REF):
        raise Invalid("network: choose a network", field="network")
    if bridge is not None and not BRIDGE.fullmatch(bridge):
        raise Invalid("bridge: a host bridge's name, e.g. br0", field="bridge")
    if model not in NIC_MODELS:
        raise Invalid(f"model: one of {', '.join(NIC_MODELS)}", field="model")
    kind, source = ("network", network) if network is not None else ("bridge", bridge or "")
    wanted = check_mac(mac) if mac else None

    def work(conn: HostConnection, _guest: Guest) -> tuple[str, bool]:
        taken = devices.macs_in_use(conn)
        if wanted in taken:
            raise Conflict(f"mac: {wanted} is already used by guest {taken[wanted]}", field="mac")
        if kind == "network":
            _check_network(conn, source, running=devices.is_running(conn, uuid))
        chosen = wanted or devices.new_mac(taken)
        live = devices.attach_nic(conn, uuid, kind=kind, source=source, mac=chosen, model=model)
        return chosen, live

    guest, (chosen, live) = _change(sessions, sync, uuid, work)
    return Changed(guest, live=live, mac=chosen)


def detach_nic(sessions: sessionmaker[Session], sync: HostCalls, *, uuid: str, mac: str) -> Changed:
    """Detach the NIC with this MAC (live and in the config)."""
    mac = check_mac(mac)

    def work(conn: HostConnection, _guest: Guest) -> bool | None:
        try:
            return devices.detach(conn, uuid, path="devices/interface", match=devices.nic_with(mac))
        except NotFound as exc:
            raise NotFound(f"mac: the guest has no NIC {mac}", field="mac") from exc

    guest, released = _change(sessions, sync, uuid, work)
    return Changed(guest, live=released is not None, pending=released is False, mac=mac)


def change_media(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    uuid: str,
    target: str,
    cdrom: VolumeRef | None,
) -> Changed:
    """Insert the ISO volume into CD-ROM drive `target` (replacing what is in it), or eject with
    None; live where the guest runs. The image is attached read-only as raw, never probed."""
    check_target(target)
    if cdrom is not None and not (cdrom.pool and cdrom.volume):
        raise Invalid("cdrom.volume: choose a pool and a volume", field="cdrom.volume")

    def work(conn: HostConnection, _guest: Guest) -> bool:
        devices.check_drive(conn, uuid, target)  # before the image: the drive is what is asked
        if cdrom is None:
            return devices.change_media(conn, uuid, target=target, path=None)
        source = attachable(conn, VolumeRef(cdrom.pool, cdrom.volume, "raw"), "cdrom")
        return devices.change_media(conn, uuid, target=target, path=source.path, kind=source.kind)

    guest, live = _change(sessions, sync, uuid, work)
    return Changed(guest, live=live, target=target, volume=cdrom.volume if cdrom else None)
