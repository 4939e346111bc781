"""Virtual networks of a host: list them, read one, start or stop one."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from app.errors import NotFound
from app.virt.connection import HostConnection
from app.virt.failures import libvirt_errors, translate
from app.virt.volumes import read_each


@dataclass(frozen=True)
class Network:
    """A libvirt virtual network."""

    name: str
    active: bool
    forward: str | None
    bridge: str | None
    autostart: bool = False


def _network(lv_network: libvirt.virNetwork) -> Network:
    root = ET.fromstring(lv_network.XMLDesc(0))
    forward = root.find("forward")
    bridge = root.find("bridge")
    return Network(
        name=lv_network.name(),
        active=bool(lv_network.isActive()),
        forward=forward.get("mode", "nat") if forward is not None else None,
        bridge=bridge.get("name") if bridge is not None else None,
        autostart=bool(lv_network.autostart()),
    )


def list_networks(conn: HostConnection) -> list[Network]:
    """Every virtual network of the host, by name."""
    with libvirt_errors():
        networks = read_each(conn.lv.listAllNetworks(0), _network)
    return sorted(networks, key=lambda n: n.name)


def _lookup(conn: HostConnection, name: str) -> libvirt.virNetwork:
    try:
        return conn.lv.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            raise NotFound(f"network '{name}' not found on this host") from exc
        raise translate(exc) from exc


def get_network(conn: HostConnection, name: str) -> Network:
    """One virtual network, or NotFound."""
    lv_network = _lookup(conn, name)
    with libvirt_errors():
        return _network(lv_network)


def set_network_active(conn: HostConnection, name: str, *, active: bool) -> Network:
    """Start (active) or stop the network, if it is not so already; the network as it is then."""
    lv_network = _lookup(conn, name)
    with libvirt_errors():
        if bool(lv_network.isActive()) != active:
            if active:
                lv_network.create()
            else:
                lv_network.destroy()
        return _network(lv_network)
