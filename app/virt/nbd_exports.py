"""Pull-mode backup jobs: a running guest's disks, as they were at one instant, exported over NBD
on a local unix socket for as long as a copy reads them (libvirt's <domainbackup mode='pull'>).

One copy of the data: the reader takes the blocks straight from QEMU, no scratch volume between
(libvirt's scratch file only holds what the guest overwrites while the export is read).
"""

import grp
import os
import pwd
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import libvirt

from app.errors import VirtdeckError
from app.virt.backups import JOB_POLL, GuestSource
from app.virt.connection import HostConnection
from app.virt.failures import error_message, libvirt_errors

SOCKET = "nbd.sock"
END_WAIT = 30.0  # seconds libvirt may take to tear an aborted job down


@dataclass(frozen=True)
class NbdExport:
    """One disk's export: the unix socket QEMU serves it on and the export's name."""

    socket: str
    name: str


def _owner(label: str) -> tuple[int, int]:
    """uid and gid of a DAC label ("+64055:+113" or "libvirt-qemu:kvm")."""
    user, _, group = label.partition(":")
    uid = int(user[1:]) if user.startswith("+") else pwd.getpwnam(user).pw_uid
    gid = int(group[1:]) if group.startswith("+") else grp.getgrnam(group).gr_gid
    return uid, gid


def _socket_directory(dom: libvirt.virDomain) -> str:
    """A new directory for the export's socket, private to the user QEMU runs as (the live
    XML's DAC label; ours when it has none), which creates the socket there."""
    directory = tempfile.mkdtemp(prefix="virtdeck-nbd-")
    try:
        label = ET.fromstring(dom.XMLDesc(0)).findtext("seclabel[@model='dac']/label")
        if label:
            os.chown(directory, *_owner(label))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def _backup_xml(directory: str, targets: list[str]) -> str:
    """The pull-mode job: its socket and each disk's scratch file (what the guest overwrites
    while the export is read keeps its old blocks there) in directory."""
    backup = ET.Element("domainbackup", mode="pull")
    ET.SubElement(backup, "server", transport="unix", socket=os.path.join(directory, SOCKET))
    disks = ET.SubElement(backup, "disks")
    for target in targets:
        disk = ET.SubElement(
            disks, "disk", name=target, backup="yes", type="file", exportname=target
        )
        ET.SubElement(disk, "scratch", file=os.path.join(directory, f"scratch-{target}.qcow2"))
    return ET.tostring(backup, encoding="unicode")


def _end(dom: libvirt.virDomain) -> None:
    """End the pull-mode job (aborting it is how it ends once its reader is done) and wait
    until libvirt has torn it down: its block jobs cancelled, its scratch files removed."""
    dom.abortJob()
    deadline = time.monotonic() + END_WAIT
    while dom.jobStats(0).get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
        if time.monotonic() > deadline:
            raise VirtdeckError(f"the backup job did not end within {END_WAIT:.0f} s")
        time.sleep(JOB_POLL)


@contextmanager
def nbd_exports(conn: HostConnection, source: GuestSource) -> Iterator[dict[str, NbdExport]]:
    """Begin a pull-mode backup of the running guest (a local host's); yields {target: export}.
    The job is ended when the block ends: after a failure quietly, after success checked, so
    that a job that vanished meanwhile (libvirtd restarted, aborted by hand) fails the copy."""
    targets = [disk.target for disk in source.disks]
    with libvirt_errors():
        dom = conn.domain(source.uuid)
        directory = _socket_directory(dom)
    try:
        with libvirt_errors():
            dom.backupBegin(_backup_xml(directory, targets), None, 0)
        socket = os.path.join(directory, SOCKET)
        try:
            yield {target: NbdExport(socket=socket, name=target) for target in targets}
        except BaseException:
            with suppress(libvirt.libvirtError, VirtdeckError):
                _end(dom)
            raise
        try:
            _end(dom)
        except libvirt.libvirtError as exc:
            raise VirtdeckError(
                f"the backup job ended before the copy was complete: {error_message(exc)}"
            ) from exc
    finally:
        shutil.rmtree(directory, ignore_errors=True)
