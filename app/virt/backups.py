"""Backups on the libvirt side: what a guest's backup copies, push-mode backup jobs into scratch
volumes, volume streams both ways, and the domain XML a restore defines.

Everything goes through the libvirt connection, so a remote host is backed up like a local one.
"""

import posixpath
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import libvirt

from app.errors import Conflict, NotFound, VirtdeckError
from app.virt.connection import HostConnection, libvirt_errors
from app.virt.teardown import find_volume, source_path

# libvirt streams carry at most 256 KiB a message, and libvirt-python allocates (and zeroes)
# whatever is asked for on every read: asking for one message is the fastest.
CHUNK = 256 * 1024
RUNNING = frozenset({"running", "blocked", "paused"})
XML_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
JOB_POLL = 0.05


@dataclass(frozen=True)
class DiskCopy:
    """A disk a backup copies: its target (vda), volume path, format and sizes in bytes."""

    target: str
    path: str
    format: str
    capacity: int
    allocation: int
    pool: str


@dataclass(frozen=True)
class GuestSource:
    """What a backup of a guest copies, read just before it begins."""

    uuid: str
    name: str
    state: str
    xml: str
    disks: tuple[DiskCopy, ...]
    skipped: tuple[str, ...]
    nvram: str | None

    @property
    def running(self) -> bool:
        """Whether the disks are copied by a push-mode backup job (else as plain volumes)."""
        return self.state in RUNNING


def _xml(dom: libvirt.virDomain) -> ET.Element:
    return ET.fromstring(dom.XMLDesc(XML_FLAGS))


def _disk_copy(lv: libvirt.virConnect, element: ET.Element, running: bool) -> DiskCopy:
    target = element.find("target").get("dev", "?")
    path = source_path(lv, element)
    if path is None:
        raise Conflict(
            f"disk {target} is not a local file or volume (network disks cannot be backed up)",
            field="disks",
        )
    volume = find_volume(lv, path)
    if volume is None:
        raise Conflict(
            f"disk {target} ({path}) is not a volume of an active storage pool on this host; "
            "define a pool for its directory and try again",
            field="disks",
        )
    root = ET.fromstring(volume.XMLDesc(0))
    if not running and root.find("backingStore/path") is not None:
        raise Conflict(
            f"disk {target} ({path}) has a backing file (an external snapshot or a linked clone); "
            "start the guest to back it up with a push-mode job, which flattens the chain",
            field="disks",
        )
    driver = element.find("driver")
    _kind, capacity, allocation = volume.info()
    return DiskCopy(
        target=target,
        path=path,
        format=(driver.get("type") if driver is not None else None) or "raw",
        capacity=capacity,
        allocation=allocation,
        pool=volume.storagePoolLookupByVolume().name(),
    )


def inspect(conn: HostConnection, uuid: str) -> GuestSource:
    """The guest's state, inactive XML and the disks a backup copies; 409 for what it cannot."""
    info = conn.guest(uuid)
    if info.state not in RUNNING and info.state != "shutoff":
        raise Conflict(
            f"{info.spec.name} is {info.state}; back it up when it is running or shut off",
            extra={"state": info.state},
        )
    running = info.state in RUNNING
    with libvirt_errors():
        root = _xml(conn.domain(uuid))
        disks, skipped = [], []
        for element in root.findall("devices/disk"):
            target = element.find("target").get("dev", "?")
            device = element.get("device", "disk")
            if device != "disk":
                skipped.append(f"{target}: {device} media are not part of a backup")
            elif element.find("source") is None:
                skipped.append(f"{target}: empty drive")
            elif element.find("readonly") is not None or element.find("shareable") is not None:
                skipped.append(f"{target}: read-only or shared disks are not part of a backup")
            else:
                disks.append(_disk_copy(conn.lv, element, running))
    if not disks:
        raise Conflict(f"{info.spec.name} has no disk to back up", field="disks")
    return GuestSource(
        uuid=uuid,
        name=info.spec.name,
        state=info.state,
        xml=ET.tostring(root, encoding="unicode"),
        disks=tuple(disks),
        skipped=tuple(skipped),
        nvram=root.findtext("os/nvram"),
    )


def _volume_xml(name: str, fmt: str, capacity: int) -> str:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    return ET.tostring(volume, encoding="unicode")


def create_volume(conn: HostConnection, pool: str, name: str, fmt: str, capacity: int) -> str:
    """Make an empty volume in an active pool; returns its path."""
    with libvirt_errors():
        lv_pool = conn.lv.storagePoolLookupByName(pool)
        return lv_pool.createXML(_volume_xml(name, fmt, capacity), 0).path()


def delete_volume(conn: HostConnection, path: str) -> None:
    """Delete the volume at path if there is one."""
    with libvirt_errors():
        volume = find_volume(conn.lv, path)
        if volume is not None:
            volume.delete(0)


def clone_volume(conn: HostConnection, path: str, name: str) -> str:
    """Copy the volume at path byte for byte to a new volume `name` in the same pool; returns
    its path. The bytes are streamed, never read as an image: libvirt's own copy would convert
    from the format it probed, following whatever backing file the header names."""
    with libvirt_errors():
        source = conn.lv.storageVolLookupByPath(path)
        pool = source.storagePoolLookupByVolume()
        physical = source.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
        copy = pool.createXML(_volume_xml(name, "raw", physical), 0).path()
    try:
        upload(conn, copy, _segments(conn, path))
    except BaseException:
        with suppress(VirtdeckError):
            delete_volume(conn, copy)
        raise
    return copy


def pool_of(conn: HostConnection, path: str) -> str | None:
    """The active pool whose directory would hold path, if any."""
    directory = posixpath.dirname(posixpath.normpath(path))
    with libvirt_errors():
        for pool in conn.lv.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            if target and posixpath.normpath(target) == directory:
                return pool.name()
    return None


def volume_exists(conn: HostConnection, path: str) -> bool:
    """Whether a pool knows a volume at path."""
    with libvirt_errors():
        return find_volume(conn.lv, path) is not None


@contextmanager
def push_backup(
    conn: HostConnection, source: GuestSource, progress: Callable[[int, int], None]
) -> Iterator[dict[str, str]]:
    """Run a push-mode backup of a running guest into scratch volumes beside its disks.

    Yields {target: scratch volume path} once the job has completed; the scratch volumes are
    deleted afterwards whatever happens. progress(done, total) is called while the job runs and
    may raise to stop it (the job is aborted).
    """
    scratch: dict[str, str] = {}
    tag = uuid_module.uuid4().hex[:8]
    try:
        backup = ET.Element("domainbackup")
        disks = ET.SubElement(backup, "disks")
        for disk in source.disks:
            name = f".virtdeck-backup-{tag}-{disk.target}.qcow2"
            scratch[disk.target] = create_volume(conn, disk.pool, name, "qcow2", disk.capacity)
            element = ET.SubElement(disks, "disk", name=disk.target, type="file")
            ET.SubElement(element, "target", file=scratch[disk.target])
            ET.SubElement(element, "driver", type="qcow2")
        with libvirt_errors():
            dom = conn.domain(source.uuid)
            dom.backupBegin(
                ET.tostring(backup, encoding="unicode"),
                None,
                libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL,
            )
            _wait_for_job(dom, progress)
        yield scratch
    finally:
        for path in scratch.values():
            with suppress(VirtdeckError):
                delete_volume(conn, path)


def _wait_for_job(dom: libvirt.virDomain, progress: Callable[[int, int], None]) -> None:
    """Poll the backup job to its end; abort it if progress raises; raise if it failed."""
    while True:
        stats = dom.jobStats(0)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            break
        try:
            progress(stats.get("disk_processed", 0), stats.get("disk_total", 0))
        except BaseException:
            with suppress(libvirt.libvirtError):
                dom.abortJob()
            raise
        time.sleep(JOB_POLL)
    done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not done.get("success", False):
        reason = done.get("errmsg") or "no reason given"
        raise VirtdeckError(f"the backup job failed: {reason}")


def _segments(conn: HostConnection, path: str) -> Iterator[bytes | int]:
    """The volume at path as it is stored: bytes for data, an int for each hole's length."""
    with libvirt_errors():
        volume = conn.lv.storageVolLookupByPath(path)
        stream = conn.lv.newStream(0)
        volume.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        try:
            while True:
                got = stream.recvFlags(CHUNK, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if got == -3:
                    yield stream.recvHole(0)
                elif isinstance(got, int):
                    raise VirtdeckError("the volume stream failed")
                elif not got:
                    break
                else:
                    yield got
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            raise


def download(
    conn: HostConnection, path: str, write: Callable[[bytes], None], hole: Callable[[int], None]
) -> None:
    """Stream the volume at path: write(data) for data, hole(length) for each hole."""
    for segment in _segments(conn, path):
        if isinstance(segment, int):
            hole(segment)
        else:
            write(segment)


def upload(conn: HostConnection, path: str, segments: Iterable[bytes | int]) -> None:
    """Write the volume at path from segments: bytes are data, an int is a hole that long."""
    with libvirt_errors():
        volume = conn.lv.storageVolLookupByPath(path)
        stream = conn.lv.newStream(0)
        volume.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        try:
            for segment in segments:
                if isinstance(segment, int):
                    stream.sendHole(segment, 0)
                else:
                    stream.send(segment)
            stream.finish()
        except BaseException:
            with suppress(libvirt.libvirtError):
                stream.abort()
            raise


def guest_state(conn: HostConnection, uuid: str) -> str | None:
    """The guest's state, or None if the host has no such guest."""
    try:
        return conn.guest(uuid).state
    except NotFound:
        return None


def name_taken(conn: HostConnection, name: str, uuid: str | None = None) -> bool:
    """Whether a guest other than uuid has this name on the host."""
    try:
        dom = conn.lv.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return dom.UUIDString() != uuid


def _restore_disks(root: ET.Element, disks: dict[str, tuple[str, str]]) -> None:
    """Each restored disk ({target: (path, format)}) as a plain file opened in the format its
    image was stored in (a running guest's raw disk comes back as the qcow2 its backup job
    wrote), with an empty <backingStore/>: libvirt then never reads a backing chain from the
    image's header, which whoever wrote the image could point at a host file."""
    for element in root.findall("devices/disk"):
        target = element.find("target").get("dev")
        if target not in disks:
            continue
        path, fmt = disks[target]
        element.set("type", "file")
        source = element.find("source")
        if source is None:
            source = ET.SubElement(element, "source")
        source.attrib.clear()
        source.set("file", path)
        driver = element.find("driver")
        if driver is None:
            driver = ET.SubElement(element, "driver", name="qemu")
        driver.set("type", fmt)
        for stale in element.findall("backingStore"):
            element.remove(stale)
        ET.SubElement(element, "backingStore")


def restored_in_place(xml: str, *, disks: dict[str, tuple[str, str]]) -> str:
    """The backed-up XML as an in-place restore defines it: the same guest, its disks at the
    given paths in the given formats ({target: (path, format)}), nothing behind them."""
    root = ET.fromstring(xml)
    _restore_disks(root, disks)
    return ET.tostring(root, encoding="unicode")


def as_new_guest(xml: str, *, name: str, uuid: str, disks: dict[str, tuple[str, str]]) -> str:
    """The backed-up XML made into another guest: new name and UUID, no MAC addresses (libvirt
    makes new ones), disks as restored_in_place puts them, and NVRAM made afresh."""
    root = ET.fromstring(xml)
    root.find("name").text = name
    uuid_element = root.find("uuid")
    if uuid_element is None:
        uuid_element = ET.SubElement(root, "uuid")
    uuid_element.text = uuid
    for interface in root.findall("devices/interface"):
        for mac in interface.findall("mac"):
            interface.remove(mac)
    _restore_disks(root, disks)
    os_element = root.find("os")
    nvram = os_element.find("nvram") if os_element is not None else None
    if nvram is not None:
        os_element.remove(nvram)
    return ET.tostring(root, encoding="unicode")


def define(conn: HostConnection, xml: str) -> str:
    """Define (or redefine) a guest from XML; returns its UUID."""
    with libvirt_errors():
        return conn.lv.defineXML(xml).UUIDString()


def undefine(conn: HostConnection, uuid: str) -> None:
    """Undefine a shut-off guest, its snapshot and checkpoint metadata with it (not its disks)."""
    with libvirt_errors():
        conn.domain(uuid).undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        )


def current_xml(conn: HostConnection, uuid: str) -> str:
    """The guest's inactive XML as it is defined now."""
    with libvirt_errors():
        return ET.tostring(_xml(conn.domain(uuid)), encoding="unicode")


def pool_active(conn: HostConnection, name: str) -> bool:
    """Whether the host has an active pool of this name."""
    try:
        return bool(conn.lv.storagePoolLookupByName(name).isActive())
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return False
        raise


def allocation(conn: HostConnection, path: str) -> int:
    """The bytes the volume at path takes on its host."""
    with libvirt_errors():
        return conn.lv.storageVolLookupByPath(path).info()[2]
