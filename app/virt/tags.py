"""Write a guest's tags, kept in its domain XML's <metadata> under virtdeck's own namespace, so that
they travel with the definition (a re-sync, a restore, another tool), not only in the database.
app.virt.domain_xml reads them back."""

import xml.etree.ElementTree as ET

import libvirt

from app.virt.connection import HostConnection
from app.virt.domain_xml import TAGS_NAMESPACE
from app.virt.failures import libvirt_errors

PREFIX = "virtdeck"  # the key libvirt files the element under
ELEMENT = libvirt.VIR_DOMAIN_METADATA_ELEMENT
CONFIG, LIVE = libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_AFFECT_LIVE


def tags_element(tags: list[str]) -> str:
    """The metadata element that holds these tags (no namespace: libvirt adds it)."""
    root = ET.Element("tags")
    for tag in tags:
        ET.SubElement(root, "tag").text = tag
    return ET.tostring(root, encoding="unicode")


def set_tags(conn: HostConnection, uuid: str, tags: list[str]) -> None:
    """Write the guest's tags into its definition and, while it runs, its live XML; no tags
    removes the element."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        flags = (CONFIG if dom.isPersistent() else 0) | (LIVE if dom.isActive() else 0)
        xml, key = (tags_element(tags), PREFIX) if tags else (None, None)
        dom.setMetadata(ELEMENT, xml, key, TAGS_NAMESPACE, flags)
