"""Domains of a host by name or UUID: whether a name is taken, define, undefine with their
metadata, and the definition a backup saves. (Lookup by UUID is HostConnection.domain.)"""

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt

from app.errors import NotFound
from app.virt.connection import HostConnection
from app.virt.failures import libvirt_errors, translate

# The guest's definition with its secrets, as a restore defines it again.
DEFINITION_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
# What libvirt keeps of a guest apart from its disks and firmware variables.
METADATA_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)
# libvirt's virCheckFlags message, e.g. the test driver's refusal of NVRAM and TPM.
UNSUPPORTED_FLAGS = re.compile(r"unsupported flags \(0x([0-9a-fA-F]+)\)")


def name_taken(conn: HostConnection, name: str, *, other_than: str | None = None) -> bool:
    """Whether a domain of this name (other than the one with UUID other_than) is on the host."""
    try:
        dom = conn.lv.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise translate(exc) from exc
    with libvirt_errors():
        return dom.UUIDString() != other_than


def xml_documents(dom: libvirt.virDomain) -> list[ET.Element]:
    """The domain's live XML and, for a running persistent domain, its next-boot XML too."""
    documents = [ET.fromstring(dom.XMLDesc(0))]
    if dom.isActive() and dom.isPersistent():
        documents.append(ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    return documents


def each_definition(
    conn: HostConnection, *, other_than: str | None = None
) -> Iterator[tuple[str, ET.Element]]:
    """(name, XML) of every domain of the host but other_than, live and next-boot, running or
    not; one that vanishes meanwhile is skipped. libvirt errors reach the caller."""
    for dom in conn.lv.listAllDomains(0):
        if dom.UUIDString() == other_than:
            continue
        try:
            documents = xml_documents(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        for root in documents:
            yield dom.name(), root


def state(conn: HostConnection, uuid: str) -> str | None:
    """The guest's state, or None if the host has no such guest."""
    try:
        return conn.guest(uuid).state
    except NotFound:
        return None


def definition(conn: HostConnection, uuid: str) -> str:
    """The guest's inactive XML with its secrets: what defines it again as it is now."""
    with libvirt_errors():
        return conn.domain(uuid).XMLDesc(DEFINITION_FLAGS)


def define(conn: HostConnection, xml: str) -> str:
    """Define (or redefine) a persistent guest from XML; returns its UUID."""
    with libvirt_errors():
        return conn.lv.defineXML(xml).UUIDString()


def undefine(conn: HostConnection, uuid: str, *, keep_nvram: bool = False) -> None:
    """Undefine a guest with its managed save, snapshot and checkpoint metadata, and its NVRAM
    and TPM state unless keep_nvram; never its disks. Flags the driver lacks (the test driver
    has no NVRAM or TPM) are dropped."""
    dom = conn.domain(uuid)
    flags = METADATA_FLAGS | (
        libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        if keep_nvram
        else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
    )
    while True:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            match = UNSUPPORTED_FLAGS.search(exc.get_error_message() or "")
            unsupported = int(match.group(1), 16) & flags if match else 0
            if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG or not unsupported:
                raise translate(exc) from exc
            flags &= ~unsupported


def rename(conn: HostConnection, uuid: str, name: str) -> None:
    """Give the (shut-off) guest a new name; libvirt refuses one with snapshots or checkpoints
    (their metadata is filed under the name)."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        dom.rename(name, 0)
