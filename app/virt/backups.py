"""Backups on the libvirt side: what a guest's backup (or clone) copies, push-mode backup jobs
into scratch volumes (or a clone's new ones), and the domain XML a restore (or a clone) defines
(volumes and their streams: app.virt.volumes).

Everything goes through the libvirt connection, so a remote host is backed up like a local one.
"""

import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import libvirt

from app.errors import Conflict, VirtdeckError
from app.virt import domains, volumes
from app.virt.connection import HostConnection
from app.virt.disks import Aside, Disk, read_disks
from app.virt.failures import libvirt_errors

RUNNING = frozenset({"running", "blocked", "paused"})
JOB_POLL = 0.05
# Why a disk is left out of a backup (see app.virt.disks.Disk.aside).
SKIPPED = {
    Aside.EMPTY: "empty drive",
    Aside.ISO: "ISO images are not part of a backup",
    Aside.READONLY: "read-only or shared disks are not part of a backup",
    Aside.SHAREABLE: "read-only or shared disks are not part of a backup",
}


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


def _skipped(disk: Disk) -> str:
    """Why a disk that is not the guest's own data is left out, after its target."""
    if disk.aside is Aside.NOT_A_DISK:
        return f"{disk.target or '?'}: {disk.device} media are not part of a backup"
    return f"{disk.target or '?'}: {SKIPPED.get(disk.aside, str(disk.aside))}"


def _disk_copy(conn: HostConnection, disk: Disk, *, running: bool, action: str) -> DiskCopy:
    target = disk.target or "?"
    path = volumes.volume_path(conn, disk)
    if path is None:
        raise Conflict(
            f"disk {target} is not a local file or volume (virtdeck cannot {action} a guest "
            "with network disks)",
            field="disks",
        )
    volume = volumes.find_volume(conn, path)
    if volume is None:
        raise Conflict(
            f"disk {target} ({path}) is not a volume of an active storage pool on this host; "
            "define a pool for its directory and try again",
            field="disks",
        )
    if not running and volumes.backing_file(conn, volume.path) is not None:
        raise Conflict(
            f"disk {target} ({path}) has a backing file (an external snapshot or a linked clone); "
            f"start the guest to {action} it with a push-mode job, which flattens the chain",
            field="disks",
        )
    return DiskCopy(
        target=target,
        path=path,
        format=disk.format or "raw",
        capacity=volume.capacity,
        allocation=volume.allocation,
        pool=volume.pool,
    )


def read_source(conn: HostConnection, uuid: str, *, action: str) -> GuestSource:
    """The guest's state, inactive XML and the disks a copy of it (a backup, a clone) takes;
    409 for what it cannot, the refusal saying what action ("back up", "clone") it was."""
    info = conn.guest(uuid)
    if info.state not in RUNNING and info.state != "shutoff":
        raise Conflict(
            f"{info.spec.name} is {info.state}; {action} it when it is running or shut off",
            extra={"state": info.state},
        )
    running = info.state in RUNNING
    root = ET.fromstring(domains.definition(conn, uuid))
    disks, skipped = [], []
    for disk in read_disks(root):
        if disk.holds_data:
            disks.append(_disk_copy(conn, disk, running=running, action=action))
        else:
            skipped.append(_skipped(disk))
    return GuestSource(
        uuid=uuid,
        name=info.spec.name,
        state=info.state,
        xml=ET.tostring(root, encoding="unicode"),
        disks=tuple(disks),
        skipped=tuple(skipped),
        nvram=root.findtext("os/nvram"),
    )


def inspect(conn: HostConnection, uuid: str) -> GuestSource:
    """What a backup of the guest copies; 409 for what it cannot, or a guest with no disk."""
    source = read_source(conn, uuid, action="back up")
    if not source.disks:
        raise Conflict(f"{source.name} has no disk to back up", field="disks")
    return source


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
        for disk in source.disks:
            name = f".virtdeck-backup-{tag}-{disk.target}.qcow2"
            made = volumes.create_volume(conn, disk.pool, name, capacity=disk.capacity)
            scratch[disk.target] = made.path
        push_into(conn, source.uuid, scratch, progress)
        yield scratch
    finally:
        for path in scratch.values():
            with suppress(VirtdeckError):
                volumes.delete_volume_at(conn, path)


def push_into(
    conn: HostConnection, uuid: str, targets: dict[str, str], progress: Callable[[int, int], None]
) -> None:
    """Copy the running guest's disks, as they are at this instant, into existing qcow2 volumes
    ({target: volume path}, each as large as its disk) with a push-mode backup job; returns once
    it has completed. progress(done, total) is called while the job runs and may raise to stop
    it (the job is aborted)."""
    backup = ET.Element("domainbackup")
    disks = ET.SubElement(backup, "disks")
    for target, path in targets.items():
        element = ET.SubElement(disks, "disk", name=target, type="file")
        ET.SubElement(element, "target", file=path)
        ET.SubElement(element, "driver", type="qcow2")
    with libvirt_errors():
        dom = conn.domain(uuid)
        dom.backupBegin(
            ET.tostring(backup, encoding="unicode"),
            None,
            libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL,
        )
        _wait_for_job(dom, progress)


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
    """A guest's saved XML (a backup's, or a clone's source) made into another guest: new name
    and UUID, no MAC addresses (libvirt makes new ones), disks as restored_in_place puts them,
    and NVRAM made afresh."""
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
