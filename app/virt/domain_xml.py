"""Read the parts of a domain's XML that the inventory keeps."""

import xml.etree.ElementTree as ET

from app.virt import disks
from app.virt.types import Disk, DomainSpec, Nic

UNIT_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024, "kb": 1000 / 1024, "k": 1, "kib": 1,
    "mb": 1000**2 / 1024, "m": 1024, "mib": 1024, "gb": 1000**3 / 1024, "g": 1024**2,
    "gib": 1024**2, "tb": 1000**4 / 1024, "t": 1024**3, "tib": 1024**3,
}  # fmt: skip
# virtdeck's own element of a domain's <metadata>: its tags (app.virt.tags writes them).
TAGS_NAMESPACE = "https://virtdeck.dev/xmlns/tags/1"
TAG_PATH = f"metadata/{{{TAGS_NAMESPACE}}}tags/{{{TAGS_NAMESPACE}}}tag"


def kib_of(element: ET.Element | None) -> int:
    """An element's size (text and unit attribute, KiB by default) in KiB; 0 when missing."""
    if element is None or not (element.text or "").strip():
        return 0
    unit = element.get("unit", "KiB").lower()
    return int(int(element.text.strip()) * UNIT_KIB.get(unit, 1))


def _disk(disk: disks.Disk) -> Disk:
    return Disk(
        target=disk.target, device=disk.device, source=disk.source, format=disk.format, bus=disk.bus
    )


def _nic(element: ET.Element) -> Nic:
    mac = element.find("mac")
    source = element.find("source")
    model = element.find("model")
    kind = element.get("type", "")
    source_name = None
    if source is not None:
        source_name = source.get("network") or source.get("bridge") or source.get("dev")
    return Nic(
        mac=mac.get("address") if mac is not None else None,
        type=kind,
        source=source_name,
        model=model.get("type") if model is not None else None,
    )


def _has_balloon(devices: ET.Element | None) -> bool:
    """Whether the devices include a memory balloon that is not model "none"."""
    balloon = devices.find("memballoon") if devices is not None else None
    return balloon is not None and balloon.get("model", "none") != "none"


def domain_size(root: ET.Element) -> tuple[int, int]:
    """A parsed <domain>'s vCPUs (the current count) and maximum memory in KiB."""
    vcpu = root.find("vcpu")
    vcpus = 0
    if vcpu is not None:
        vcpus = int(vcpu.get("current") or (vcpu.text or "0").strip())
    return vcpus, kib_of(root.find("memory"))


def read_tags(root: ET.Element) -> tuple[str, ...]:
    """The tag texts a parsed <domain> carries in virtdeck's metadata element, as written there
    (by virtdeck or another tool: the inventory keeps only those that are tags)."""
    return tuple(text for e in root.iterfind(TAG_PATH) if (text := (e.text or "").strip()))


def parse_domain(xml: str) -> DomainSpec:
    """The inventory's view of a domain XML document."""
    root = ET.fromstring(xml)
    vcpus, memory_max = domain_size(root)
    current = root.find("currentMemory")
    devices = root.find("devices")
    nics = tuple(_nic(n) for n in devices.iter("interface")) if devices is not None else ()
    return DomainSpec(
        uuid=(root.findtext("uuid") or "").strip(),
        name=(root.findtext("name") or "").strip(),
        vcpus=vcpus,
        memory_max_kib=memory_max,
        memory_current_kib=kib_of(current) if current is not None else memory_max,
        disks=tuple(_disk(d) for d in disks.read_disks(root)),
        nics=nics,
        has_balloon=_has_balloon(devices),
        tags=read_tags(root),
    )


def console_kinds(xml: str) -> tuple[str, ...]:
    """The consoles the domain XML declares: "vnc" (a VNC screen), "serial" (a serial line or
    console); none for XML that does not parse."""
    try:
        devices = ET.fromstring(xml).find("devices")
    except ET.ParseError:
        return ()
    if devices is None:
        return ()
    kinds = ("vnc",) if devices.find("graphics[@type='vnc']") is not None else ()
    serial = devices.find("serial") is not None or devices.find("console") is not None
    return (*kinds, "serial") if serial else kinds
