"""A guest's disks, NICs and removable-media drives: read them (with each volume's pool, format
and sizes), attach and detach disks and NICs, grow a disk, and insert or eject a drive's media.

A running guest gets each change live and in its persistent config, a shut-off one in its config
only. A live attach that QEMU refuses changes nothing (libvirt saves the config only after the
live part worked); a live detach needs the guest's cooperation, so whether the device has gone
yet is read back and reported.
"""

import contextlib
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from app.errors import Conflict, Invalid, NotFound
from app.virt import domains, volumes
from app.virt.connection import HostConnection
from app.virt.disks import Disk, read_disk, read_disks
from app.virt.failures import libvirt_errors

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
INACTIVE = libvirt.VIR_DOMAIN_XML_INACTIVE
# How long a live detach waits for the guest to let go of the device (libvirt waits too).
DETACH_WAIT_S = 5.0
Match = Callable[[ET.Element], bool]


@dataclass(frozen=True)
class DiskView:
    """A disk or drive of a guest, with its volume's pool and sizes where a pool knows it."""

    target: str
    device: str
    bus: str | None
    source: str | None
    format: str | None
    pool: str | None
    volume: str | None
    capacity: int | None
    allocation: int | None
    readonly: bool
    holds_data: bool

    @property
    def is_media(self) -> bool:
        """Whether it is a removable-media drive (CD-ROM or floppy)."""
        return self.device in ("cdrom", "floppy")


@dataclass(frozen=True)
class NicView:
    """A network interface of a guest."""

    mac: str
    type: str
    source: str | None
    model: str | None


@dataclass(frozen=True)
class Hardware:
    """A guest's devices as it has them now (live when it runs, else its config)."""

    running: bool
    disks: tuple[DiskView, ...]
    nics: tuple[NicView, ...]


def _xml(dom: libvirt.virDomain, *, live: bool) -> ET.Element:
    return ET.fromstring(dom.XMLDesc(0 if live else INACTIVE))


def _disk_view(conn: HostConnection, dom: libvirt.virDomain, element: ET.Element) -> DiskView:
    disk = read_disk(element)
    path = volumes.volume_path(conn, disk)
    volume = volumes.find_volume(conn, path) if path else None
    capacity = allocation = None
    if volume is not None:
        capacity, allocation = volume.capacity, volume.allocation
    if path and dom.isActive() and not disk.is_media:
        # What QEMU has open: the pool's figure is read from a header the guest may write.
        with contextlib.suppress(libvirt.libvirtError):  # a driver without it: the pool's
            capacity = dom.blockInfo(disk.target, 0)[0]
    return DiskView(
        target=disk.target,
        device=disk.device,
        bus=disk.bus,
        source=path or disk.source,
        format=disk.format,
        pool=volume.pool if volume else disk.pool,
        volume=volume.name if volume else disk.volume,
        capacity=capacity,
        allocation=allocation,
        readonly=disk.readonly,
        holds_data=disk.holds_data,
    )


def _nic_view(element: ET.Element) -> NicView:
    source = element.find("source")
    model = element.find("model")
    return NicView(
        mac=_mac_of(element) or "",
        type=element.get("type", ""),
        source=(source.get("network") or source.get("bridge") or source.get("dev"))
        if source is not None
        else None,
        model=model.get("type") if model is not None else None,
    )


def read_hardware(conn: HostConnection, uuid: str) -> Hardware:
    """The guest's disks, drives and NICs, with the sizes of its volumes."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        running = bool(dom.isActive())
        root = _xml(dom, live=running)
        disks = tuple(_disk_view(conn, dom, d) for d in root.findall("devices/disk"))
    nics = tuple(_nic_view(n) for n in root.findall("devices/interface"))
    return Hardware(running=running, disks=disks, nics=nics)


def _mac_of(element: ET.Element) -> str | None:
    mac = element.find("mac")
    address = mac.get("address") if mac is not None else None
    return address.lower() if address else None


def macs_in_use(conn: HostConnection) -> dict[str, str]:
    """MAC address (lower case) → the name of the guest on the host that has it."""
    used: dict[str, str] = {}
    with libvirt_errors():
        for name, root in domains.each_definition(conn):
            for element in root.findall("devices/interface"):
                if mac := _mac_of(element):
                    used.setdefault(mac, name)
    return used


def disk_users(
    conn: HostConnection, *, other_than: str | None = None, writers: bool = False
) -> dict[str, str]:
    """Host path → the name of a guest (but other_than) that uses it as a disk or in a disk's
    backing chain; with writers, only as a disk it writes to."""
    users: dict[str, str] = {}
    with libvirt_errors():
        for name, root in domains.each_definition(conn, other_than=other_than):
            for disk in read_disks(root):
                if writers and not disk.holds_data:
                    continue
                for image in (disk,) if writers else (disk, *disk.backing):
                    path = volumes.volume_path(conn, image)
                    if path:
                        users.setdefault(path, name)
    return users


def new_mac(taken: dict[str, str]) -> str:
    """A random MAC in QEMU's locally administered range 52:54:00, none of taken."""
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


def is_running(conn: HostConnection, uuid: str) -> bool:
    """Whether the guest runs (so a change to it is live too)."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        return bool(dom.isActive())


def free_target(conn: HostConnection, uuid: str, prefix: str = "vd") -> str:
    """The first target name (vdb, vdc, ...) neither the live nor the next-boot guest uses."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        documents = domains.xml_documents(dom)
    used = {t.get("dev") for root in documents for t in root.findall("devices/disk/target")}
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = [*letters, *(a + b for a in letters for b in letters)]
    for suffix in names:
        if f"{prefix}{suffix}" not in used:
            return f"{prefix}{suffix}"
    raise Conflict("target: the guest has no free disk target left", field="target")


def _attach(dom: libvirt.virDomain, element: ET.Element) -> bool:
    """Attach the device live and in the config (a shut-off guest: the config); whether live."""
    running = bool(dom.isActive())
    dom.attachDeviceFlags(
        ET.tostring(element, encoding="unicode"), LIVE | CONFIG if running else CONFIG
    )
    return running


def attach_disk(
    conn: HostConnection, uuid: str, *, path: str, kind: str, fmt: str, target: str
) -> bool:
    """Attach the file or block device at path as virtio disk `target` in format fmt (given by
    the caller, never probed); whether it was attached to the running guest."""
    element = ET.Element("disk", type=kind, device="disk")
    ET.SubElement(element, "driver", name="qemu", type=fmt)
    ET.SubElement(element, "source", {"dev" if kind == "block" else "file": path})
    # The chain ends here: libvirt never reads a backing file from the image's header.
    ET.SubElement(element, "backingStore")
    ET.SubElement(element, "target", dev=target, bus="virtio")
    dom = conn.domain(uuid)
    with libvirt_errors():
        return _attach(dom, element)


def attach_nic(
    conn: HostConnection, uuid: str, *, kind: str, source: str, mac: str, model: str = "virtio"
) -> bool:
    """Attach a NIC on a network or bridge with this MAC; whether it was attached live."""
    element = ET.Element("interface", type=kind)
    ET.SubElement(element, "mac", address=mac)
    ET.SubElement(element, "source", {kind: source})
    ET.SubElement(element, "model", type=model)
    dom = conn.domain(uuid)
    with libvirt_errors():
        return _attach(dom, element)


def _find(root: ET.Element, path: str, match: Match) -> ET.Element | None:
    return next((e for e in root.findall(path) if match(e)), None)


def disk_at(target: str) -> Match:
    """Matches the <disk> whose target is target."""
    return lambda e: e.find(f"target[@dev='{target}']") is not None


def nic_with(mac: str) -> Match:
    """Matches the <interface> with this MAC address."""
    return lambda e: _mac_of(e) == mac.lower()


def _gone(dom: libvirt.virDomain, path: str, match: Match) -> bool:
    """Whether the running guest let go of the device, waiting up to DETACH_WAIT_S."""
    deadline = time.monotonic() + DETACH_WAIT_S
    while _find(_xml(dom, live=True), path, match) is not None:
        if time.monotonic() > deadline or not dom.isActive():
            return not dom.isActive()
        time.sleep(0.2)
    return True


def detach(conn: HostConnection, uuid: str, *, path: str, match: Match) -> bool | None:
    """Detach the device that match finds (path: devices/disk or devices/interface) from the
    running guest and from its config. Returns whether the running guest let go of it (None
    when it is shut off); NotFound when neither has it."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        running = bool(dom.isActive())
        live = _find(_xml(dom, live=True), path, match) if running else None
        config = _find(_xml(dom, live=False), path, match)
        if live is None and config is None:
            raise NotFound("the guest has no such device")
        released = None
        if live is not None:
            dom.detachDeviceFlags(ET.tostring(live, encoding="unicode"), LIVE)
            released = _gone(dom, path, match)
        if config is not None:
            dom.detachDeviceFlags(ET.tostring(config, encoding="unicode"), CONFIG)
    return released


def _check_grows(target: str, capacity: int, size: int) -> None:
    if size <= capacity:
        raise Invalid(
            f"size_gib: {target} already holds {capacity / volumes.GIB:.2f} GiB; disks only grow",
            field="size_gib",
        )


def _grow_volume(conn: HostConnection, disk: Disk, size: int) -> None:
    """Grow a shut-off guest's disk by resizing its volume, which libvirt does as the format
    its pool reads from the image's header: that reading must be the format the disk is attached
    as, with the backing file the guest's XML names, or nothing is done (the header is the
    guest's to write, so it may only refuse, never choose)."""
    path = volumes.volume_path(conn, disk)
    lv_volume = volumes.refreshed_volume(conn, path) if path else None
    if lv_volume is None:
        raise Conflict(
            f"target: {disk.target} is not a volume of an active storage pool; start the guest "
            "to grow it",
            field="target",
        )
    root = ET.fromstring(lv_volume.XMLDesc(0))
    read = root.find("target/format")
    read_as = read.get("type") if read is not None else None
    backing = root.findtext("backingStore/path")
    named = disk.backing[0].path if disk.backing else None
    if read_as != disk.format or (backing is not None and backing != named):
        what = (
            "names another backing file"
            if read_as == disk.format
            else f"reads as {read_as or 'unknown'}"
        )
        raise Conflict(
            f"target: {disk.target} is attached as {disk.format} but its image {what}; "
            "it is grown only while the guest runs",
            field="target",
        )
    _check_grows(disk.target, lv_volume.info()[1], size)
    lv_volume.resize(size, 0)


def grow_disk(conn: HostConnection, uuid: str, *, target: str, size: int) -> bool:
    """Grow data disk `target` to size bytes (never shrink): a block resize in the running
    guest, else its volume's resize; whether it was live. What it grows is read at this moment,
    so a guest that started or stopped since it was looked at is grown the right way."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        running = bool(dom.isActive())
        element = _find(_xml(dom, live=running), "devices/disk", disk_at(target))
        if element is None:
            raise NotFound(f"target: the guest has no disk {target}", field="target")
        disk = read_disk(element)
        if not disk.holds_data:
            raise Conflict(f"target: {target} is not a writable data disk", field="target")
        if not running:
            _grow_volume(conn, disk, size)
            return False
        _check_grows(target, dom.blockInfo(target, 0)[0], size)
        dom.blockResize(target, size, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    return True


def _with_media(element: ET.Element, *, path: str | None, kind: str) -> str:
    """The drive's XML holding the image at path (raw, read-only), or empty for None."""
    for old in element.findall("source") + element.findall("backingStore"):
        element.remove(old)
    element.set("type", kind)
    driver = element.find("driver")
    if driver is None:
        driver = ET.SubElement(element, "driver", name="qemu")
    driver.set("type", "raw")
    if path is not None:
        source = ET.Element("source", {"dev" if kind == "block" else "file": path})
        element.insert(list(element).index(driver) + 1, source)
    if element.find("readonly") is None:
        ET.SubElement(element, "readonly")
    return ET.tostring(element, encoding="unicode")


def _drive(root: ET.Element, target: str) -> ET.Element:
    """The removable-media drive `target` of a domain's XML; NotFound or Conflict naming it."""
    element = _find(root, "devices/disk", disk_at(target))
    if element is None:
        raise NotFound(f"target: the guest has no drive {target}", field="target")
    if element.get("device") not in ("cdrom", "floppy"):
        raise Conflict(f"target: {target} is a disk, not a CD-ROM drive", field="target")
    return element


def check_drive(conn: HostConnection, uuid: str, target: str) -> None:
    """NotFound or Conflict, naming `target`, unless the guest has that CD-ROM or floppy drive."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        _drive(_xml(dom, live=bool(dom.isActive())), target)


def change_media(
    conn: HostConnection, uuid: str, *, target: str, path: str | None, kind: str = "file"
) -> bool:
    """Put the image at path into drive `target` (None ejects), in the running guest first and
    then in its config; whether it changed live. A locked tray is forced, as `virsh
    change-media --force` does."""
    dom = conn.domain(uuid)
    flags = libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
    with libvirt_errors():
        running = bool(dom.isActive())
        drives = []  # both looked up first: a drive in one only changes neither
        for live in (True, False) if running else (False,):
            drives.append((live, _drive(_xml(dom, live=live), target)))
        for live, element in drives:
            xml = _with_media(element, path=path, kind=kind)
            dom.updateDeviceFlags(xml, flags | (LIVE if live else CONFIG))
    return running
