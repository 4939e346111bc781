"""Delete a guest: undefine it with its metadata, and remove the volumes that only it uses.

A disk is removed only when libvirt knows it as a storage volume, no other domain on the host
uses it (as a disk or inside a backing chain), no volume is backed by it, and it is not
removable media, read-only or shareable (except the cloud-init seed virtdeck made for the
guest). Everything else is kept and reported with the reason.
"""

import posixpath
from dataclasses import dataclass

import libvirt

from app.errors import Conflict, VirtdeckError
from app.virt import devices, domains, volumes
from app.virt.connection import STATE_NAMES, HostConnection
from app.virt.disks import Aside, Disk, read_disks
from app.virt.failures import libvirt_errors

NOT_REQUESTED = "storage removal not requested"
NOT_A_VOLUME = "not in an active storage pool; only libvirt storage volumes are removed"
NOT_LOCAL = "not a local file or a volume of an active pool"
# Why a disk that is not the guest's own data is kept (see app.virt.disks.Disk.aside).
KEPT_ASIDE = {
    Aside.ISO: "ISO images are never removed",
    Aside.READONLY: "read-only disks are never removed",
    Aside.SHAREABLE: "marked shareable",
}


@dataclass(frozen=True)
class KeptDisk:
    """A disk left in place, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class StoragePlan:
    """Which of a guest's disks a delete removes and which it keeps."""

    remove: tuple[str, ...]
    keep: tuple[KeptDisk, ...]


@dataclass(frozen=True)
class Deletion:
    """What deleting a guest did."""

    uuid: str
    name: str
    removed: tuple[str, ...]
    kept: tuple[KeptDisk, ...]


@dataclass(frozen=True)
class _Own:
    """One of the guest's disks, and its host path (or a label for sources that have none)."""

    disk: Disk
    path: str
    local: bool


def _own_disks(conn: HostConnection, dom: libvirt.virDomain) -> list[_Own]:
    """The guest's disks that have a source (live and next-boot), each path once."""
    own: dict[str, _Own] = {}
    for root in domains.xml_documents(dom):
        for disk in read_disks(root):
            if disk.is_empty:
                continue
            path = volumes.volume_path(conn, disk)
            own.setdefault(path or disk.source, _Own(disk, path or disk.source, path is not None))
    return list(own.values())


def _never_removed(own: _Own) -> str | None:
    """Why a disk is kept whatever the storage says, if it is."""
    if own.disk.is_seed and own.local:
        return None  # virtdeck made it for this guest (kept while another guest uses it)
    aside = own.disk.aside
    if aside is Aside.NOT_A_DISK:
        return f"{own.disk.device} media are never removed"
    if aside is not Aside.ISO and not own.local:
        return NOT_LOCAL
    return None if aside is None else KEPT_ASIDE.get(aside, str(aside))


def _backing_chain_kept(path: str, backing: dict[str, str], seen: set[str]) -> list[KeptDisk]:
    """The backing images under a removed volume: kept, as they may serve other images."""
    kept = []
    top, base = path, backing.get(path)
    while base and base not in seen:
        seen.add(base)
        kept.append(KeptDisk(base, f"backing image of {top}; backing images are never removed"))
        top, base = base, backing.get(base)
    return kept


def _plan(conn: HostConnection, dom: libvirt.virDomain) -> StoragePlan:
    """Sort the guest's disks into the volumes to remove and the disks to keep, with reasons."""
    keep: list[KeptDisk] = []
    candidates: list[str] = []
    for own in _own_disks(conn, dom):
        reason = _never_removed(own)
        volume = None if reason else volumes.find_volume(conn, own.path)
        if volume is None:
            keep.append(KeptDisk(own.path, reason or NOT_A_VOLUME))
        elif (path := posixpath.normpath(volume.path)) not in candidates:
            candidates.append(path)
    if not candidates:
        return StoragePlan(remove=(), keep=tuple(keep))
    users = devices.disk_users(conn, other_than=dom.UUIDString())
    backing = volumes.backing_files(conn)
    dependents = {base: top for top, base in backing.items()}
    remove: list[str] = []
    for path in candidates:
        if path in users:
            keep.append(KeptDisk(path, f"also used by guest {users[path]}"))
        elif path in dependents:
            keep.append(KeptDisk(path, f"backing image of {dependents[path]}"))
        else:
            remove.append(path)
    seen = {*remove, *(k.path for k in keep)}
    for path in remove:
        keep.extend(_backing_chain_kept(path, backing, seen))
    return StoragePlan(remove=tuple(remove), keep=tuple(keep))


def _not_requested(conn: HostConnection, dom: libvirt.virDomain) -> StoragePlan:
    """Every disk kept, when the delete leaves storage alone."""
    kept = tuple(KeptDisk(own.path, NOT_REQUESTED) for own in _own_disks(conn, dom))
    return StoragePlan(remove=(), keep=kept)


def plan_storage(conn: HostConnection, uuid: str) -> StoragePlan:
    """Which disks deleting the guest with its storage would remove, and which it would keep."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        return _plan(conn, dom)


def _refuse_if_running(dom: libvirt.virDomain, *, force: bool) -> None:
    """A running guest is deleted only when forced: 409 naming its state otherwise."""
    if force or not dom.isActive():
        return
    state = STATE_NAMES.get(dom.state()[0], "nostate")
    raise Conflict(
        f"cannot delete {dom.name()}: it is {state}; shut it down first, or force it off",
        field="state",
        extra={"state": state},
    )


def _force_off(dom: libvirt.virDomain) -> None:
    """Stop the guest at once if it is running."""
    if not dom.isActive():
        return
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # it stopped meanwhile
            raise


def _remove_volumes(
    conn: HostConnection, paths: tuple[str, ...]
) -> tuple[list[str], list[KeptDisk]]:
    """Delete each volume; one that fails is kept with libvirt's reason."""
    removed, failed = [], []
    for path in paths:
        try:
            volumes.delete_volume_at(conn, path)
            removed.append(path)
        except VirtdeckError as exc:
            failed.append(KeptDisk(path, f"could not remove: {exc.message}"))
    return removed, failed


def delete_guest(conn: HostConnection, uuid: str, *, remove_storage: bool, force: bool) -> Deletion:
    """Force off if asked, undefine with metadata and NVRAM, then remove the disks it owns."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        name = dom.name()
        persistent = bool(dom.isPersistent())
        _refuse_if_running(dom, force=force)
        plan = _plan(conn, dom) if remove_storage else _not_requested(conn, dom)
        _force_off(dom)
    if persistent:  # a transient guest is gone once it is off
        domains.undefine(conn, uuid)
    removed, failed = _remove_volumes(conn, plan.remove)
    return Deletion(uuid=uuid, name=name, removed=tuple(removed), kept=(*plan.keep, *failed))
