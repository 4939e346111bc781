"""Pull-mode backup jobs: a running guest's disks, as they were at one instant, exported over NBD
on a unix socket on the guest's host for as long as a copy reads them (libvirt's <domainbackup
mode='pull'>); a qemu+ssh host's socket is reached through SSH (app.services.backups.ssh_exports).

One copy of the data: the reader takes the blocks straight from QEMU, no scratch volume between
(libvirt's scratch file only holds what the guest overwrites while the export is read).

The job may begin a checkpoint (app.virt.checkpoints), and an incremental one exports, beside
each disk, the blocks written since an earlier checkpoint as an NBD dirty-bitmap meta context.
"""

import grp
import os
import pwd
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass

import libvirt

from app.errors import VirtdeckError
from app.virt.backups import JOB_POLL, GuestSource
from app.virt.connection import HostConnection
from app.virt.failures import connection_lost, error_message, libvirt_errors, translate

SOCKET = "nbd.sock"
DIRECTORY_PREFIX = "virtdeck-nbd-"  # the socket's directory, here or on a qemu+ssh host
END_WAIT = 30.0  # seconds libvirt may take to tear an aborted job down
LOST = "the connection to libvirtd was lost during the backup (libvirtd stopped or restarted)"


@dataclass(frozen=True)
class NbdExport:
    """One disk's export: the unix socket QEMU serves it on, the export's name and, for an
    incremental job, the NBD meta context that marks the blocks changed since its checkpoint."""

    socket: str
    name: str
    context: str | None = None


class IncrementalRefused(VirtdeckError):
    """libvirt would not begin an incremental job (its checkpoint or a bitmap is unusable); a
    full one may still begin."""


def _owner(label: str) -> tuple[int, int]:
    """uid and gid of a DAC label ("+64055:+113" or "libvirt-qemu:kvm")."""
    user, _, group = label.partition(":")
    uid = int(user[1:]) if user.startswith("+") else pwd.getpwnam(user).pw_uid
    gid = int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid
    return uid, gid


# Makes the directory for the export's socket and scratch files, private to QEMU's user (given by
# its DAC label, None: ours), where QEMU runs; yields its path there and removes it afterwards.
SocketDirectory = Callable[[str | None], AbstractContextManager[str]]


@contextmanager
def local_socket_directory(owner: str | None) -> Iterator[str]:
    """A new directory on this machine (a local host's QEMU creates the socket there)."""
    directory = tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)
    try:
        if owner:
            os.chown(directory, *_owner(owner))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _qemu_owner(live: ET.Element) -> str | None:
    """The user QEMU runs as: the live XML's DAC label, if it has one."""
    return live.findtext("seclabel[@model='dac']/label") or None


def _bitmap(target: str) -> str:
    """The name an incremental job exports disk target's changed blocks under."""
    return f"backup-{target}"


def _backup_xml(directory: str, targets: list[str], *, incremental: str | None) -> str:
    """The pull-mode job: its socket and each disk's scratch file (what the guest overwrites
    while the export is read keeps its old blocks there) in directory; if incremental, the
    checkpoint whose changes each disk's bitmap export shows."""
    backup = ET.Element("domainbackup", mode="pull")
    if incremental is not None:
        ET.SubElement(backup, "incremental").text = incremental
    ET.SubElement(backup, "server", transport="unix", socket=os.path.join(directory, SOCKET))
    disks = ET.SubElement(backup, "disks")
    for target in targets:
        disk = ET.SubElement(
            disks, "disk", name=target, backup="yes", type="file", exportname=target
        )
        if incremental is not None:
            disk.set("exportbitmap", _bitmap(target))
        ET.SubElement(disk, "scratch", file=os.path.join(directory, f"scratch-{target}.qcow2"))
    return ET.tostring(backup, encoding="unicode")


def _checkpoint_xml(live: ET.Element, name: str, targets: list[str]) -> str:
    """A checkpoint named name with a bitmap of each backed-up disk and none of the others (of
    the guest's live XML)."""
    checkpoint = ET.Element("domaincheckpoint")
    ET.SubElement(checkpoint, "name").text = name
    disks = ET.SubElement(checkpoint, "disks")
    for dev in live.findall("devices/disk/target"):
        target = dev.get("dev")
        kept = "bitmap" if target in targets else "no"
        ET.SubElement(disks, "disk", name=target, checkpoint=kept)
    return ET.tostring(checkpoint, encoding="unicode")


def _begin(
    dom: libvirt.virDomain, backup_xml: str, checkpoint_xml: str | None, *, incremental: str | None
) -> None:
    """backupBegin; IncrementalRefused if an incremental job is what libvirt refused."""
    try:
        dom.backupBegin(backup_xml, checkpoint_xml, 0)
    except libvirt.libvirtError as exc:
        if incremental is None:
            raise translate(exc) from exc
        raise IncrementalRefused(
            f"libvirt refused an incremental backup since checkpoint {incremental}: "
            f"{error_message(exc)}"
        ) from exc


def _end(dom: libvirt.virDomain) -> None:
    """End the pull-mode job (aborting it is how it ends once its reader is done) and wait
    until libvirt has torn it down: its block jobs cancelled, its scratch files removed."""
    dom.abortJob()
    deadline = time.monotonic() + END_WAIT
    while dom.jobStats(0).get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
        if time.monotonic() > deadline:
            raise VirtdeckError(f"the backup job did not end within {END_WAIT:.0f} s")
        time.sleep(JOB_POLL)


def end_leftover(conn: HostConnection, uuid: str) -> None:
    """End the running guest's pull-mode job of ours whose reader is gone: libvirtd was killed
    while a backup read it, and libvirt resumes such a job when it starts again (the guest then
    takes no other backup, nor loses that job's checkpoint, until it ends). Ours: its socket is
    in a directory we name. Call it under the guest's backup lock (no backup of ours reads)."""
    with libvirt_errors():
        dom = conn.domain(uuid)
        if dom.jobStats(0).get("operation") != libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP:
            return
        server = ET.fromstring(dom.backupGetXMLDesc(0)).find("server")
        socket = "" if server is None else server.get("socket", "")
        if os.path.basename(os.path.dirname(socket)).startswith(DIRECTORY_PREFIX):
            _end(dom)


@contextmanager
def nbd_exports(
    conn: HostConnection,
    source: GuestSource,
    *,
    socket_directory: SocketDirectory = local_socket_directory,
    checkpoint: str | None = None,
    incremental: str | None = None,
) -> Iterator[dict[str, NbdExport]]:
    """Begin a pull-mode backup of the running guest; yields {target: export}, the sockets being
    paths on the guest's host (in a directory made by socket_directory: a local host's by
    default). The job is ended when the block ends: after a failure quietly, after success
    checked, so that a job that vanished meanwhile (libvirtd restarted, aborted by hand) fails
    the copy. With checkpoint, the job begins a checkpoint of that name (a bitmap per backed-up
    disk); with incremental, each export also marks the blocks changed since that checkpoint
    (IncrementalRefused: libvirt would not begin such a job)."""
    targets = [disk.target for disk in source.disks]
    with libvirt_errors():
        dom = conn.domain(source.uuid)
        live = ET.fromstring(dom.XMLDesc(0))
    owner = _qemu_owner(live)
    checkpoint_xml = None if checkpoint is None else _checkpoint_xml(live, checkpoint, targets)
    with socket_directory(owner) as directory:
        backup_xml = _backup_xml(directory, targets, incremental=incremental)
        _begin(dom, backup_xml, checkpoint_xml, incremental=incremental)
        socket = os.path.join(directory, SOCKET)
        try:
            yield {
                target: NbdExport(
                    socket=socket,
                    name=target,
                    context=None if incremental is None else f"qemu:dirty-bitmap:{_bitmap(target)}",
                )
                for target in targets
            }
        except BaseException:
            with suppress(libvirt.libvirtError, VirtdeckError):
                _end(dom)
            raise
        try:
            _end(dom)
        except libvirt.libvirtError as exc:
            if connection_lost(exc):  # the copy may be whole, but the job's end is unknown
                raise VirtdeckError(LOST) from exc
            raise VirtdeckError(
                f"the backup job ended before the copy was complete: {error_message(exc)}"
            ) from exc
