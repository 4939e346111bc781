"""New volumes made from a base image or from bytes, over the libvirt connection (so remote hosts
too): a qcow2 overlay on an image, a copy of one grown to a size, a small volume written whole."""

import contextlib
import xml.etree.ElementTree as ET

from app.errors import Conflict, VirtdeckError
from app.virt import volumes
from app.virt.connection import HostConnection
from app.virt.failures import libvirt_errors


def create_overlay(
    conn: HostConnection,
    pool: str,
    name: str,
    *,
    capacity: int,
    backing_path: str,
    backing_format: str,
) -> volumes.Volume:
    """Make a qcow2 volume of capacity bytes whose reads fall through to the image at
    backing_path, opened in backing_format (written into its header, never probed)."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(ET.SubElement(volume, "target"), "format", type="qcow2")
    backing = ET.SubElement(volume, "backingStore")
    ET.SubElement(backing, "path").text = backing_path
    ET.SubElement(backing, "format", type=backing_format)
    with libvirt_errors():
        lv_pool = conn.lv.storagePoolLookupByName(pool)
        lv_pool.createXML(ET.tostring(volume, encoding="unicode"), 0)
    return volumes.get_volume(conn, pool, name)


def grow_volume(conn: HostConnection, pool: str, name: str, *, capacity: int, fmt: str) -> None:
    """Grow a volume to capacity bytes. libvirt grows it as the format it reads from the header
    after a rescan, so that reading must be fmt with nothing behind it: the probe can only
    refuse, never choose what qemu-img opens."""
    with libvirt_errors():
        lv_pool = conn.lv.storagePoolLookupByName(pool)
        volumes.refresh(lv_pool)
        lv_volume = lv_pool.storageVolLookupByName(name)
        root = ET.fromstring(lv_volume.XMLDesc(0))
        read = root.find("target/format")
        read_as = read.get("type") if read is not None else None
        if read_as != fmt or root.find("backingStore/path") is not None:
            raise Conflict(
                f"volume '{name}' reads as {read_as or 'unknown'}"
                f"{' with a backing file' if read_as == fmt else ''}, not {fmt}; not grown"
            )
        lv_volume.resize(capacity, 0)


def write_volume(conn: HostConnection, pool: str, name: str, data: bytes) -> volumes.Volume:
    """Make a raw volume holding data, streamed to it; none is left if the writing fails."""
    volume = volumes.create_volume(conn, pool, name, capacity=len(data), fmt="raw")
    try:
        chunks = (data[at : at + volumes.CHUNK] for at in range(0, len(data), volumes.CHUNK))
        volumes.upload(conn, volume.path, chunks)
    except BaseException:
        with contextlib.suppress(VirtdeckError):
            volumes.delete_volume(conn, pool, name)
        raise
    return volume
