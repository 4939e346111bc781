"""Storage pools of a host changed by an admin: start or stop one, and make a directory pool
(defined, its directory made, started and set to start with the host, or undefined again)."""

import xml.etree.ElementTree as ET
from contextlib import suppress

import libvirt

from app.virt.connection import HostConnection
from app.virt.failures import libvirt_errors
from app.virt.volumes import Pool, get_pool, lookup_pool


def set_pool_active(conn: HostConnection, name: str, *, active: bool) -> Pool:
    """Start (active) or stop the pool, if it is not so already; the pool as it is then."""
    lv_pool = lookup_pool(conn, name)
    with libvirt_errors():
        if bool(lv_pool.isActive()) != active:
            if active:
                lv_pool.create(0)
            else:
                lv_pool.destroy()
    return get_pool(conn, name)


def _directory_pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = path
    return ET.tostring(pool, encoding="unicode")


def create_directory_pool(conn: HostConnection, name: str, path: str) -> Pool:
    """A new pool of the files in directory path on the host (made if missing), started and
    set to start with the host. If a step after the definition fails, the pool is undefined
    again (a directory it made stays: it may have been there before)."""
    with libvirt_errors():
        lv_pool = conn.lv.storagePoolDefineXML(_directory_pool_xml(name, path), 0)
        try:
            lv_pool.build(0)
            lv_pool.create(0)
            lv_pool.setAutostart(1)
        except libvirt.libvirtError:
            with suppress(libvirt.libvirtError):
                if lv_pool.isActive():
                    lv_pool.destroy()
            with suppress(libvirt.libvirtError):
                lv_pool.undefine()
            raise
    return get_pool(conn, name)
