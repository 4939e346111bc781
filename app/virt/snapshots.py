"""Read, take, revert and delete a guest's libvirt snapshots (internal ones, on libvirt 9.0)."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

import libvirt

from app.errors import Conflict, Invalid, NotFound
from app.virt import checkpoints
from app.virt.connection import HostConnection
from app.virt.domain_xml import domain_size
from app.virt.failures import libvirt_errors

# libvirt reverts external snapshots only from 9.9, and takes internal snapshots of a shut-off
# UEFI (pflash) guest only from 9.3 (of a running one: not at all).
EXTERNAL_REVERT_SINCE = 9_009_000
UEFI_OFFLINE_SINCE = 9_003_000


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot as libvirt describes it."""

    name: str
    parent: str | None
    created_at: datetime
    state: str
    description: str
    is_current: bool
    external: bool
    memory: bool
    # The guest's size as the snapshot saved it (a revert brings that definition back); 0 when
    # the snapshot holds no <domain>.
    vcpus: int = 0
    memory_kib: int = 0


def snapshot_xml(name: str, description: str, *, memory: bool) -> str:
    """The <domainsnapshot> asking for an internal snapshot, with the memory state or not."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
    return ET.tostring(root, encoding="unicode")


def parse_snapshot(xml: str, *, is_current: bool) -> SnapshotInfo:
    """A snapshot's facts from its XML."""
    root = ET.fromstring(xml)
    kinds = {d.get("snapshot") for d in root.findall("disks/disk")}
    memory_kind = root.find("memory").get("snapshot") if root.find("memory") is not None else "no"
    domain = root.find("domain")
    vcpus, memory_kib = domain_size(domain) if domain is not None else (0, 0)
    return SnapshotInfo(
        name=root.findtext("name", ""),
        parent=root.findtext("parent/name"),
        created_at=datetime.fromtimestamp(int(root.findtext("creationTime", "0")), UTC),
        state=root.findtext("state", "nostate"),
        description=root.findtext("description", ""),
        is_current=is_current,
        external="external" in kinds or memory_kind == "external",
        memory=memory_kind in ("internal", "external"),
        vcpus=vcpus,
        memory_kib=memory_kib,
    )


def guests_with_snapshots(conn: HostConnection) -> set[str]:
    """The UUIDs of the guests that have at least one snapshot (one call for the whole host)."""
    with libvirt_errors():
        found = conn.lv.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)
        return {dom.UUIDString() for dom in found}


def list_snapshots(conn: HostConnection, uuid: str) -> list[SnapshotInfo]:
    """Every snapshot of the guest, oldest first."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        found = [
            parse_snapshot(s.getXMLDesc(0), is_current=bool(s.isCurrent(0)))
            for s in dom.listAllSnapshots(0)
        ]
    return sorted(found, key=lambda s: (s.created_at, s.name))


def _lookup(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot | None:
    """The guest's snapshot of this name, or None."""
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return None
        raise


def _existing(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
    """The guest's snapshot of this name, or NotFound in plain words."""
    snap = _lookup(dom, name)
    if snap is None:
        raise NotFound(f"{dom.name()} has no snapshot named {name}")
    return snap


def _is_uefi(dom: libvirt.virDomain) -> bool:
    """Whether the guest boots UEFI firmware from pflash."""
    os_ = ET.fromstring(dom.XMLDesc(0)).find("os")
    if os_ is None:
        return False
    loader = os_.find("loader")
    return os_.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")


def _check_creatable(conn: HostConnection, dom: libvirt.virDomain, *, memory: bool) -> None:
    """Refuse, in plain words, what libvirt cannot snapshot internally."""
    running = dom.isActive() == 1
    if memory and not running:
        raise Invalid("memory: a shut-off guest has no memory state to save", field="memory")
    if running and not memory and conn.lv.getType() == "QEMU":
        raise Invalid(
            "memory: libvirt takes an internal snapshot of a running guest only together with "
            "its memory state; include it, or shut the guest off first",
            field="memory",
        )
    if _is_uefi(dom) and (running or conn.lv.getLibVersion() < UEFI_OFFLINE_SINCE):
        raise Conflict(
            "this host's libvirt cannot take internal snapshots of a UEFI guest"
            + (" while it runs" if conn.lv.getLibVersion() >= UEFI_OFFLINE_SINCE else "")
        )


def create_snapshot(
    conn: HostConnection, uuid: str, name: str, description: str, *, memory: bool
) -> None:
    """Take an internal snapshot of the guest (a running one's memory state too, if asked)."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        if _lookup(dom, name) is not None:
            raise Conflict(f"name: {dom.name()} already has a snapshot named {name}", field="name")
        _check_creatable(conn, dom, memory=memory)
        if dom.isActive() != 1:
            # The checkpoint of the last backup would block it: the next backup is full instead.
            checkpoints.discard_all(conn, uuid, only_virtdecks=True)
        dom.snapshotCreateXML(snapshot_xml(name, description, memory=memory), 0)


def revert_snapshot(conn: HostConnection, uuid: str, name: str) -> None:
    """Put the guest back to the snapshot (running or shut off, as it was then)."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        snap = _existing(dom, name)
        info = parse_snapshot(snap.getXMLDesc(0), is_current=False)
        if info.external and conn.lv.getLibVersion() < EXTERNAL_REVERT_SINCE:
            raise Conflict(
                f"{name} is an external snapshot; this host's libvirt (before 9.9) cannot "
                "revert to external snapshots"
            )
        dom.revertToSnapshot(snap, 0)


def delete_snapshot(conn: HostConnection, uuid: str, name: str) -> None:
    """Delete the snapshot; its children are kept and take its parent."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        _existing(dom, name).delete(0)
