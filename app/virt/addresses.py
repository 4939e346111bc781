"""A running guest's IP addresses as its host knows them: from its network's DHCP leases or the
host's ARP table, each address with the source that gave it first. Not from the QEMU guest
agent: libvirt waits for an agent's answer without end by default, so a guest whose agent never
answers would hold a call (and a libvirtd worker) for good. Addresses are parsed, names bounded."""

import ipaddress
from dataclasses import dataclass

import libvirt

from app.errors import NotFound
from app.virt.connection import HostConnection
from app.virt.failures import connection_lost, libvirt_errors, one_line, translate

SOURCES = (
    ("DHCP lease", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    ("ARP table", libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
)
MAX_ADDRESSES = 64


@dataclass(frozen=True)
class Address:
    """One IP address of a guest's interface, and which source reported it."""

    interface: str
    mac: str | None
    address: str
    prefix: int | None
    source: str


def _addresses(label: str, interfaces: dict) -> list[Address]:
    found = []
    for name, interface in sorted(interfaces.items()):
        for entry in interface.get("addrs") or []:
            try:
                ip = ipaddress.ip_address(entry.get("addr", ""))
            except ValueError:
                continue
            if ip.is_loopback:
                continue
            prefix = entry.get("prefix")
            found.append(
                Address(
                    interface=one_line(str(name), 32),
                    mac=one_line(str(interface["hwaddr"]), 32) if interface.get("hwaddr") else None,
                    address=str(ip),
                    prefix=prefix if isinstance(prefix, int) and 0 <= prefix <= 128 else None,
                    source=label,
                )
            )
    return found


def guest_addresses(conn: HostConnection, uuid: str) -> list[Address]:
    """The guest's addresses (none while it is not running), each once, from the first source
    that reports it; a source that cannot answer (no lease) is skipped, a lost connection is
    raised."""
    dom = conn.domain(uuid)
    with libvirt_errors():
        if not dom.isActive():
            return []
    found: dict[str, Address] = {}
    for label, source in SOURCES:
        try:
            interfaces = dom.interfaceAddresses(source, 0)
        except libvirt.libvirtError as exc:
            if connection_lost(exc):
                raise translate(exc) from exc
            continue
        for address in _addresses(label, interfaces or {}):
            found.setdefault(address.address, address)
    return list(found.values())[:MAX_ADDRESSES]


def read_addresses(conn: HostConnection, uuids: list[str]) -> dict[str, list[Address]]:
    """guest_addresses of each of these guests, by UUID, in one pass over the connection; one
    that vanished meanwhile is left out."""
    found = {}
    for uuid in uuids:
        try:
            found[uuid] = guest_addresses(conn, uuid)
        except NotFound:
            continue
    return found
