"""Delete a guest: undefine it with its metadata, and remove the volumes that only it uses.

A disk is removed only when libvirt knows it as a storage volume, no other domain on the host
uses it (as a disk or inside a backing chain), no volume is backed by it, and it is not
removable media, read-only or shareable. Everything else is kept and reported with the reason.
"""

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import libvirt

from app.errors import Conflict
from app.virt.connection import STATE_NAMES, HostConnection, error_message, libvirt_errors

# Everything of the guest that libvirt keeps apart from its disks.
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_TPM
)
# libvirt's virCheckFlags message, e.g. the test driver's refusal of NVRAM and TPM.
UNSUPPORTED_FLAGS = re.compile(r"unsupported flags \(0x([0-9a-fA-F]+)\)")
NOT_REQUESTED = "storage removal not requested"
NOT_A_VOLUME = "not in an active storage pool; only libvirt storage volumes are removed"


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
class _Disk:
    """One <disk> of a domain: its host path (or a label for sources that have none)."""

    path: str
    local: bool
    device: str
    readonly: bool
    shareable: bool


def _code(exc: libvirt.libvirtError) -> int:
    """libvirt's error code."""
    return exc.get_error_code()


def _xml_documents(dom: libvirt.virDomain) -> list[ET.Element]:
    """The domain's live XML and, for a running persistent domain, its next-boot XML too."""
    documents = [ET.fromstring(dom.XMLDesc(0))]
    if dom.isActive() and dom.isPersistent():
        documents.append(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    return documents


def _pool_volume_path(lv: libvirt.virConnect, pool: str, volume: str) -> str | None:
    """The path of a <source pool= volume=> disk, or None if the pool does not have it."""
    try:
        return lv.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
    except libvirt.libvirtError as exc:
        if _code(exc) in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL):
            return None
        raise


def source_path(lv: libvirt.virConnect, element: ET.Element) -> str | None:
    """The host path of a <disk> or <backingStore>, if it has one."""
    source = element.find("source")
    if source is None:
        return None
    kind = element.get("type", "file")
    if kind == "volume":
        return _pool_volume_path(lv, source.get("pool", ""), source.get("volume", ""))
    path = source.get("file") if kind == "file" else source.get("dev") if kind == "block" else None
    return posixpath.normpath(path) if path else None


def _disk(lv: libvirt.virConnect, element: ET.Element) -> _Disk | None:
    """One of the guest's own disks, or None when it has no source at all (an empty drive)."""
    source = element.find("source")
    if source is None:
        return None
    path = source_path(lv, element)
    volume = f"{source.get('pool')}/{source.get('volume')}" if source.get("volume") else None
    label = path or volume or source.get("name") or source.get("dir")
    if label is None:
        return None
    return _Disk(
        path=label,
        local=path is not None,
        device=element.get("device", "disk"),
        readonly=element.find("readonly") is not None,
        shareable=element.find("shareable") is not None,
    )


def _own_disks(lv: libvirt.virConnect, dom: libvirt.virDomain) -> list[_Disk]:
    """The guest's disks (live and next-boot), each path once."""
    disks: dict[str, _Disk] = {}
    for root in _xml_documents(dom):
        for element in root.findall("devices/disk"):
            disk = _disk(lv, element)
            if disk is not None:
                disks.setdefault(disk.path, disk)
    return list(disks.values())


def _never_removed(disk: _Disk) -> str | None:
    """Why a disk is kept whatever the storage says, if it is."""
    if disk.device in ("cdrom", "floppy"):
        return f"{disk.device} media are never removed"
    if disk.path.lower().endswith(".iso"):
        return "ISO images are never removed"
    if not disk.local:
        return "not a local file or a volume of an active pool"
    if disk.readonly:
        return "read-only disks are never removed"
    if disk.shareable:
        return "marked shareable"
    return None


def _refresh_pools_holding(lv: libvirt.virConnect, path: str) -> bool:
    """Refresh the active pools whose directory holds path (a file made outside libvirt)."""
    refreshed = False
    for pool in lv.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with suppress(libvirt.libvirtError):
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
            if target and posixpath.normpath(target) == posixpath.dirname(path):
                pool.refresh(0)
                refreshed = True
    return refreshed


def _lookup_volume(lv: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    """The volume an active pool knows at path, or None."""
    try:
        return lv.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if _code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def find_volume(lv: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    """The storage volume at path, rescanning its pool once for files libvirt has not seen."""
    volume = _lookup_volume(lv, path)
    if volume is None and _refresh_pools_holding(lv, path):
        volume = _lookup_volume(lv, path)
    return volume


def _other_domains(lv: libvirt.virConnect, uuid: str) -> Iterator[tuple[str, ET.Element]]:
    """(name, XML) of every other domain, running or not; one that vanishes is skipped."""
    for dom in lv.listAllDomains(0):
        if dom.UUIDString() == uuid:
            continue
        try:
            documents = _xml_documents(dom)
        except libvirt.libvirtError as exc:
            if _code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        for root in documents:
            yield dom.name(), root


def _users(lv: libvirt.virConnect, uuid: str) -> dict[str, str]:
    """Path → name of another domain that uses it as a disk or in a disk's backing chain."""
    users: dict[str, str] = {}
    for name, root in _other_domains(lv, uuid):
        for disk in root.findall("devices/disk"):
            for element in (disk, *disk.iter("backingStore")):
                path = source_path(lv, element)
                if path:
                    users.setdefault(path, name)
    return users


def _pool_volumes(pool: libvirt.virStoragePool) -> list[libvirt.virStorageVol]:
    """The pool's volumes; none if it was stopped or removed since it was listed."""
    try:
        return pool.listAllVolumes(0)
    except libvirt.libvirtError as exc:
        if _code(exc) in (libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_OPERATION_INVALID):
            return []
        raise


def _backing_files(lv: libvirt.virConnect) -> dict[str, str]:
    """Volume path → the path of its backing image, for every volume of every active pool."""
    backing: dict[str, str] = {}
    for pool in lv.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        for volume in _pool_volumes(pool):
            try:
                root = ET.fromstring(volume.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if _code(exc) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    continue
                raise
            base = root.findtext("backingStore/path")
            if base:
                path = posixpath.normpath(volume.path())
                backing[path] = posixpath.normpath(posixpath.join(posixpath.dirname(path), base))
    return backing


def _backing_chain_kept(path: str, backing: dict[str, str], seen: set[str]) -> list[KeptDisk]:
    """The backing images under a removed volume: kept, as they may serve other images."""
    kept = []
    top, base = path, backing.get(path)
    while base and base not in seen:
        seen.add(base)
        kept.append(KeptDisk(base, f"backing image of {top}; backing images are never removed"))
        top, base = base, backing.get(base)
    return kept


def _plan(lv: libvirt.virConnect, dom: libvirt.virDomain) -> StoragePlan:
    """Sort the guest's disks into the volumes to remove and the disks to keep, with reasons."""
    keep: list[KeptDisk] = []
    candidates: list[str] = []
    for disk in _own_disks(lv, dom):
        reason = _never_removed(disk)
        volume = None if reason else find_volume(lv, disk.path)
        if volume is None:
            keep.append(KeptDisk(disk.path, reason or NOT_A_VOLUME))
        elif (path := posixpath.normpath(volume.path())) not in candidates:
            candidates.append(path)
    if not candidates:
        return StoragePlan(remove=(), keep=tuple(keep))
    users = _users(lv, dom.UUIDString())
    backing = _backing_files(lv)
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


def _not_requested(lv: libvirt.virConnect, dom: libvirt.virDomain) -> StoragePlan:
    """Every disk kept, when the delete leaves storage alone."""
    return StoragePlan(
        remove=(), keep=tuple(KeptDisk(d.path, NOT_REQUESTED) for d in _own_disks(lv, dom))
    )


def plan_storage(conn: HostConnection, uuid: str) -> StoragePlan:
    """Which disks deleting the guest with its storage would remove, and which it would keep."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        return _plan(conn.lv, dom)


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
        if _code(exc) != libvirt.VIR_ERR_OPERATION_INVALID:  # it stopped meanwhile
            raise


def _undefine(dom: libvirt.virDomain) -> None:
    """Undefine with every metadata flag the driver supports (the test driver lacks some)."""
    flags = UNDEFINE_FLAGS
    while True:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            match = UNSUPPORTED_FLAGS.search(exc.get_error_message() or "")
            unsupported = int(match.group(1), 16) & flags if match else 0
            if _code(exc) != libvirt.VIR_ERR_INVALID_ARG or not unsupported:
                raise
            flags &= ~unsupported


def _remove_volumes(
    lv: libvirt.virConnect, paths: tuple[str, ...]
) -> tuple[list[str], list[KeptDisk]]:
    """Delete each volume; one that fails is kept with libvirt's reason."""
    removed, failed = [], []
    for path in paths:
        try:
            lv.storageVolLookupByPath(path).delete(0)
            removed.append(path)
        except libvirt.libvirtError as exc:
            failed.append(KeptDisk(path, f"could not remove: {error_message(exc)}"))
    return removed, failed


def delete_guest(conn: HostConnection, uuid: str, *, remove_storage: bool, force: bool) -> Deletion:
    """Force off if asked, undefine with metadata and NVRAM, then remove the disks it owns."""
    dom = conn.domain(uuid)
    lv = conn.lv
    with libvirt_errors():
        name = dom.name()
        persistent = bool(dom.isPersistent())
        _refuse_if_running(dom, force=force)
        plan = _plan(lv, dom) if remove_storage else _not_requested(lv, dom)
        _force_off(dom)
        if persistent:  # a transient guest is gone once it is off
            _undefine(dom)
        removed, failed = _remove_volumes(lv, plan.remove)
    return Deletion(uuid=uuid, name=name, removed=tuple(removed), kept=(*plan.keep, *failed))
