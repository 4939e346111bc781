"""Change a defined guest's size and settings: vCPUs and memory (current and maximum), autostart,
description and boot order (its firmware is shown). What libvirt can change on the running guest
is changed there and in the persistent config; the rest goes into the config for the next
start."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from app.virt import domains
from app.virt.connection import HostConnection
from app.virt.domain_xml import kib_of
from app.virt.failures import translate

# The devices a guest's <os><boot dev=...> may name, first tried first.
BOOT_DEVICES = ("hd", "cdrom", "network", "fd")
# What a per-device <boot order> stands for in that list.
DEVICE_BOOT = {"disk": "hd", "cdrom": "cdrom", "floppy": "fd", "interface": "network"}
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


@dataclass(frozen=True)
class Settings:
    """A guest's size and settings as its persistent config has them, and whether it runs (and
    so what it runs with now)."""

    vcpus: int
    vcpus_max: int
    memory_kib: int
    memory_max_kib: int
    autostart: bool
    description: str
    running: bool
    # What the running guest has now (its maximums are those it started with).
    live_vcpus_max: int | None
    live_memory_max_kib: int | None
    has_balloon: bool
    # Where it boots from, first tried first, and its firmware: "bios" or "uefi".
    boot_order: tuple[str, ...] = ()
    firmware: str = "bios"


@dataclass(frozen=True)
class Change:
    """What to set; None leaves it as it is."""

    vcpus: int | None = None
    vcpus_max: int | None = None
    memory_kib: int | None = None
    memory_max_kib: int | None = None
    autostart: bool | None = None
    description: str | None = None
    boot_order: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Applied:
    """Which fields took effect on the running guest, and which wait for its next start."""

    live: tuple[str, ...]
    next_start: tuple[str, ...]


def _sizes(xml: str) -> tuple[int, int, int, int, str, bool]:
    root = ET.fromstring(xml)
    vcpu = root.find("vcpu")
    vcpus_max = int((vcpu.text or "1").strip()) if vcpu is not None else 1
    vcpus = int(vcpu.get("current") or vcpus_max) if vcpu is not None else 1
    memory_max = kib_of(root.find("memory"))
    current = root.find("currentMemory")
    memory = kib_of(current) if current is not None else memory_max
    balloon = root.find("devices/memballoon")
    has_balloon = balloon is not None and balloon.get("model", "none") != "none"
    return vcpus, vcpus_max, memory, memory_max, (root.findtext("description") or ""), has_balloon


def _boot_order(root: ET.Element) -> tuple[str, ...]:
    """The <os><boot dev> list, or the devices' own <boot order> read as such a list."""
    listed = tuple(b.get("dev", "") for b in root.findall("os/boot"))
    if listed:
        return listed
    ordered = []
    for element in root.findall("devices/*"):
        boot = element.find("boot")
        if boot is not None and (order := boot.get("order", "")).isdigit():
            kind = element.get("device") if element.tag == "disk" else element.tag
            ordered.append((int(order), DEVICE_BOOT.get(kind or "", element.tag)))
    return tuple(dict.fromkeys(kind for _order, kind in sorted(ordered)))


def _firmware(root: ET.Element) -> str:
    os_ = root.find("os")
    if os_ is None:
        return "bios"
    uefi = os_.get("firmware") == "efi" or os_.find("loader[@type='pflash']") is not None
    return "uefi" if uefi else "bios"


def read_settings(conn: HostConnection, uuid: str) -> Settings:
    """The guest's persistent settings, and what it runs with now."""
    dom = conn.domain(uuid)
    try:
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        running = bool(dom.isActive())
        live = _sizes(dom.XMLDesc(0)) if running else None
        autostart = bool(dom.autostart())
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc
    vcpus, vcpus_max, memory, memory_max, description, has_balloon = _sizes(config)
    root = ET.fromstring(config)
    return Settings(
        vcpus=vcpus,
        vcpus_max=vcpus_max,
        memory_kib=memory,
        memory_max_kib=memory_max,
        autostart=autostart,
        description=description,
        running=running,
        live_vcpus_max=live[1] if live else None,
        live_memory_max_kib=live[3] if live else None,
        has_balloon=has_balloon,
        boot_order=_boot_order(root),
        firmware=_firmware(root),
    )


def _set_boot_order(conn: HostConnection, uuid: str, order: tuple[str, ...]) -> None:
    """Redefine the guest to boot from these devices in turn (its per-device boot orders, which
    libvirt does not allow beside them, are dropped)."""
    root = ET.fromstring(domains.definition(conn, uuid))
    os_ = root.find("os")
    for boot in os_.findall("boot"):
        os_.remove(boot)
    for element in root.findall("devices/*"):
        for boot in element.findall("boot"):
            element.remove(boot)
    # <boot> comes after <os>'s <type>, <loader>, <nvram>, <kernel>, <initrd> and <cmdline>.
    before = [c for c in os_ if c.tag in ("type", "loader", "nvram", "kernel", "initrd", "cmdline")]
    at = list(os_).index(before[-1]) + 1 if before else 0
    for offset, dev in enumerate(order):
        os_.insert(at + offset, ET.Element("boot", dev=dev))
    domains.define(conn, ET.tostring(root, encoding="unicode"))


def apply_change(conn: HostConnection, uuid: str, change: Change, now: Settings) -> Applied:
    """Set what the change names (checked by the caller against `now`): maximums first, then
    the current values, each live when the guest runs and can take it, and in the config."""
    dom = conn.domain(uuid)
    live: list[str] = []
    later: list[str] = []

    def set_both(field: str, call, value: int, *, live_ok: bool, extra: int = 0) -> None:
        if now.running and live_ok:
            call(value, LIVE | extra)
            live.append(field)
        elif now.running:
            later.append(field)
        call(value, CONFIG | extra)

    try:
        if change.vcpus_max is not None:
            # A running guest keeps the maximum it started with.
            set_both("vcpus_max", dom.setVcpusFlags, change.vcpus_max, live_ok=False,
                     extra=libvirt.VIR_DOMAIN_VCPU_MAXIMUM)  # fmt: skip
        if change.memory_max_kib is not None:
            set_both("memory_max", dom.setMemoryFlags, change.memory_max_kib, live_ok=False,
                     extra=libvirt.VIR_DOMAIN_MEM_MAXIMUM)  # fmt: skip
        if change.vcpus is not None:
            fits = now.live_vcpus_max is not None and change.vcpus <= now.live_vcpus_max
            set_both("vcpus", dom.setVcpusFlags, change.vcpus, live_ok=fits)
        if change.memory_kib is not None:
            fits = (
                now.has_balloon
                and now.live_memory_max_kib is not None
                and change.memory_kib <= now.live_memory_max_kib
            )
            set_both("memory", dom.setMemoryFlags, change.memory_kib, live_ok=fits)
        if change.autostart is not None:
            dom.setAutostart(int(change.autostart))
        if change.description is not None:
            kind = libvirt.VIR_DOMAIN_METADATA_DESCRIPTION
            if now.running:
                dom.setMetadata(kind, change.description or None, None, None, LIVE)
            dom.setMetadata(kind, change.description or None, None, None, CONFIG)
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc
    if change.boot_order is not None:
        _set_boot_order(conn, uuid, change.boot_order)
        if now.running:
            later.append("boot_order")
    return Applied(live=tuple(live), next_start=tuple(later))
