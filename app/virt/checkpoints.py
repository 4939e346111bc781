"""libvirt checkpoints as virtdeck's incremental backups use them: each backup of a running guest
begins one ("virtdeck-<backup id>-<its start time>"), whose per-disk bitmap records the blocks
the guest writes after it; the next backup reads only those. Here: which checkpoints a guest has,
whether one can still serve an incremental backup (and why not, in a sentence), and removing
them.
"""

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime

import libvirt

from app.errors import NotFound, VirtdeckError
from app.virt.connection import HostConnection
from app.virt.failures import libvirt_errors

PREFIX = "virtdeck-"
# Why a disk cannot carry the changed-block bitmap an incremental backup reads.
NO_BITMAP = "only qcow2 disks keep the changed-block bitmaps incremental backups need"


def name_of(backup_id: int, started_at: datetime) -> str:
    """The checkpoint the backup with this id, begun at started_at, begins. The time makes the
    name unique on the host: SQLite reuses the id of a deleted newest backup, and two virtdeck
    databases may back up guests of one host."""
    return f"{PREFIX}{backup_id}-{started_at:%Y%m%dT%H%M%S%f}"


def names(conn: HostConnection, uuid: str) -> list[str]:
    """The names of the guest's checkpoints."""
    with libvirt_errors():
        return [cp.getName() for cp in conn.domain(uuid).listAllCheckpoints(0)]


def _lookup(dom: libvirt.virDomain, name: str) -> libvirt.virDomainCheckpoint | None:
    try:
        return dom.checkpointLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
            return None
        raise


def bitmap_refusal(conn: HostConnection, *, target: str, path: str, fmt: str) -> str | None:
    """Why the disk at path (opened by QEMU as fmt) cannot carry a checkpoint's bitmap, or None:
    only qcow2 version 3 images can. The volume's XML gives the compat level libvirt read from
    the image's header (1.1 for version 3; none for version 2, libvirt's default)."""
    if fmt != "qcow2":
        return f"disk {target} is {fmt}; {NO_BITMAP}"
    with libvirt_errors():
        root = ET.fromstring(conn.lv.storageVolLookupByPath(path).XMLDesc(0))
    if root.findtext("target/compat") in (None, "0.10"):
        return f"disk {target} is qcow2 version 2 (compat 0.10); {NO_BITMAP}"
    return None


def changed_since(
    conn: HostConnection, uuid: str, name: str, *, targets: Iterable[str]
) -> tuple[dict[str, int], str | None]:
    """Whether checkpoint name can serve an incremental backup of these disks of the running
    guest now: ({target: bytes changed since it}, None), or ({}, why not). It must exist, be the
    guest's newest virtdeck checkpoint, and hold a bitmap of every disk that QEMU still has (its
    size is only known for a bitmap QEMU has)."""
    with libvirt_errors():
        dom = conn.domain(uuid)
        checkpoint = _lookup(dom, name)
        if checkpoint is None:
            return {}, (
                f"checkpoint {name} is missing on the host (a snapshot of the shut-off guest, "
                "a restore in place, or someone outside virtdeck removed it)"
            )
        newer = [
            child.getName()
            for child in checkpoint.listAllChildren(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_DESCENDANTS)
            if child.getName().startswith(PREFIX)
        ]
        if newer:
            return {}, f"checkpoint {name} is not the guest's newest ({newer[0]} came after it)"
        try:
            root = ET.fromstring(checkpoint.getXMLDesc(libvirt.VIR_DOMAIN_CHECKPOINT_XML_SIZE))
        except libvirt.libvirtError:
            return {}, f"the changed-block bitmaps of checkpoint {name} are gone from the disks"
    disks = {d.get("name"): d for d in root.findall("disks/disk")}
    changed = {}
    for target in targets:
        disk = disks.get(target)
        if disk is None or disk.get("checkpoint") != "bitmap":
            return {}, f"checkpoint {name} keeps no bitmap of disk {target}"
        size = disk.get("size", "")
        if not size.isdigit():
            return {}, f"the bitmap of disk {target} in checkpoint {name} is gone from QEMU"
        changed[target] = int(size)
    return changed, None


def delete(conn: HostConnection, uuid: str, name: str) -> None:
    """Delete checkpoint name if the guest has it; its bitmap merges into its parent's."""
    with libvirt_errors():
        checkpoint = _lookup(conn.domain(uuid), name)
        if checkpoint is not None:
            checkpoint.delete(0)


def delete_others(conn: HostConnection, uuid: str, keep: str) -> None:
    """Delete the guest's virtdeck checkpoints but keep (the newest backup's, which supersedes
    them), so the guest carries one bitmap. Best effort: one that will not go (the host is gone,
    the guest was deleted) stays, which only costs its bitmap until the next backup tries again."""
    with suppress(VirtdeckError):
        for name in names(conn, uuid):
            if name.startswith(PREFIX) and name != keep:
                with suppress(VirtdeckError):
                    delete(conn, uuid, name)


def discard_all(conn: HostConnection, uuid: str, *, only_virtdecks: bool = False) -> None:
    """Forget the guest's checkpoints (every one, or only those virtdeck began): libvirt's
    metadata only. After its disks were replaced, as by a restore in place, their bitmaps are
    gone or mean nothing; and libvirt (9.0) takes no internal snapshot of a shut-off guest that
    has checkpoints, nor deletes one fully while the guest is off."""
    with libvirt_errors():
        try:
            dom = conn.domain(uuid)
        except NotFound:
            return
        for checkpoint in dom.listAllCheckpoints(0):
            if only_virtdecks and not checkpoint.getName().startswith(PREFIX):
                continue
            with suppress(libvirt.libvirtError):
                checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
