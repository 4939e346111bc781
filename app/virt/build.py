"""Build a new guest's domain XML for what its host offers, and define it."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from app.errors import Conflict
from app.virt import cpu as cpus
from app.virt import domains
from app.virt.connection import HostConnection
from app.virt.disks import SEED_ALIAS
from app.virt.failures import libvirt_errors

DEFAULT_CPU = cpus.CpuConfig()
# Best first: hardware virtualisation, then emulation; other drivers (test) name their own.
DOMAIN_TYPES = ("kvm", "qemu")


@dataclass(frozen=True)
class Platform:
    """What a host runs guests with: domain type, architecture, emulator and firmware."""

    domain_type: str
    arch: str
    emulator: str | None = None
    # The hypervisor's limit for one guest, when the host says.
    max_vcpus: int | None = None
    firmware: tuple[str, ...] = ("bios",)
    cdrom_bus: str = "sata"
    # The CPU modes this host supports (app.virt.cpu.CPU_MODES) and its usable named models.
    cpu_modes: tuple[str, ...] = ("default",)
    cpu_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class DiskSource:
    """A volume to attach: its path, whether a file or block device, and its format (as virtdeck
    made it or the request named it, never as probed from its header)."""

    path: str
    kind: str = "file"
    format: str = "qcow2"
    # The image behind a qcow2 overlay (virtdeck made it so); None: nothing lies behind.
    backing: "DiskSource | None" = None


@dataclass(frozen=True)
class GuestPlan:
    """Everything a new guest's domain XML says."""

    uuid: str
    name: str
    vcpus: int
    memory_mib: int
    platform: Platform
    firmware: str = "bios"
    disk: DiskSource | None = None
    cdrom: DiskSource | None = None
    # A cloud-init seed: a second CD-ROM, read-only like the first.
    seed: DiskSource | None = None
    network: str | None = None
    cpu: cpus.CpuConfig = DEFAULT_CPU


def _hvm_guest(caps: ET.Element) -> ET.Element:
    """The capabilities' <guest> for full virtualisation, preferring the host's own arch."""
    guests = [g for g in caps.findall("guest") if g.findtext("os_type") == "hvm"]
    if not guests:
        raise Conflict("this host offers no full virtualisation (hvm) guests")
    host_arch = caps.findtext("host/cpu/arch")
    return next((g for g in guests if g.find("arch").get("name") == host_arch), guests[0])


def _domain_caps(conn: HostConnection, arch: str, domain_type: str) -> ET.Element | None:
    """The host's domain capabilities, or None where the driver has none (test driver)."""
    try:
        return ET.fromstring(conn.lv.getDomainCapabilities(None, arch, None, domain_type, 0))
    except libvirt.libvirtError:
        return None


def _uefi_offered(domcaps: ET.Element) -> bool:
    """Whether firmware auto-selection can find a UEFI build for the default machine."""
    os_ = domcaps.find("os")
    if os_ is None or os_.get("supported") != "yes":
        return False
    values = [v.text for v in os_.findall("enum[@name='firmware']/value")]
    return "efi" in values or bool(os_.findall("loader/value"))


def host_platform(conn: HostConnection) -> Platform:
    """The platform a new guest on this host gets: kvm where offered, else qemu, else any."""
    with libvirt_errors():
        caps = ET.fromstring(conn.lv.getCapabilities())
    arch_element = _hvm_guest(caps).find("arch")
    arch = arch_element.get("name", "")
    offered = [d.get("type", "") for d in arch_element.findall("domain")]
    domain_type = next((t for t in DOMAIN_TYPES if t in offered), offered[0])
    platform = Platform(
        domain_type=domain_type, arch=arch, emulator=arch_element.findtext("emulator")
    )
    domcaps = _domain_caps(conn, arch, domain_type)
    if domcaps is None:
        return platform
    max_vcpus = domcaps.find("vcpu")
    cpu_modes, cpu_models = cpus.offered(domcaps)
    return Platform(
        domain_type=domain_type,
        arch=arch,
        emulator=domcaps.findtext("path") or platform.emulator,
        max_vcpus=int(max_vcpus.get("max")) if max_vcpus is not None else None,
        firmware=("bios", "uefi") if _uefi_offered(domcaps) else ("bios",),
        # i440fx machines have IDE for a CD-ROM; q35 and the rest have SATA.
        cdrom_bus="ide" if "i440fx" in (domcaps.findtext("machine") or "") else "sata",
        cpu_modes=cpu_modes,
        cpu_models=cpu_models,
    )


def _source(element: ET.Element, source: DiskSource) -> None:
    ET.SubElement(element, "source", {"file" if source.kind == "file" else "dev": source.path})


def _backing_store(element: ET.Element, backing: DiskSource | None) -> None:
    """The chain behind an image, spelled out to its end: libvirt then never reads one from a
    header, which whoever writes the image could point at a host file."""
    store = ET.SubElement(element, "backingStore")
    if backing is not None:
        store.set("type", backing.kind)
        ET.SubElement(store, "format", type=backing.format)
        _source(store, backing)
        _backing_store(store, backing.backing)


def _disk(
    devices: ET.Element,
    source: DiskSource,
    *,
    device: str,
    target: str,
    bus: str,
    alias: str | None = None,
) -> None:
    disk = ET.SubElement(devices, "disk", type=source.kind, device=device)
    ET.SubElement(disk, "driver", name="qemu", type=source.format)
    _source(disk, source)
    _backing_store(disk, source.backing)
    ET.SubElement(disk, "target", dev=target, bus=bus)
    if device == "cdrom":
        ET.SubElement(disk, "readonly")
    if alias is not None:
        ET.SubElement(disk, "alias", name=alias)


def _os(domain: ET.Element, plan: GuestPlan) -> None:
    os_ = ET.SubElement(domain, "os")
    if plan.firmware == "uefi":
        os_.set("firmware", "efi")
    ET.SubElement(os_, "type", arch=plan.platform.arch).text = "hvm"
    # An empty new disk does not boot, so the firmware falls through to the CD-ROM.
    ET.SubElement(os_, "boot", dev="hd")
    if plan.cdrom is not None:
        ET.SubElement(os_, "boot", dev="cdrom")


def _devices(domain: ET.Element, plan: GuestPlan) -> None:
    devices = ET.SubElement(domain, "devices")
    if plan.platform.emulator:
        ET.SubElement(devices, "emulator").text = plan.platform.emulator
    if plan.disk is not None:
        _disk(devices, plan.disk, device="disk", target="vda", bus="virtio")
    bus = plan.platform.cdrom_bus
    targets = iter(("hdc", "hdd") if bus == "ide" else ("sda", "sdb"))
    for media, alias in ((plan.cdrom, None), (plan.seed, SEED_ALIAS)):
        if media is not None:
            _disk(devices, media, device="cdrom", target=next(targets), bus=bus, alias=alias)
    if plan.network is not None:
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network=plan.network)
        ET.SubElement(nic, "model", type="virtio")
    ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
    graphics = ET.SubElement(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    ET.SubElement(graphics, "listen", type="address", address="127.0.0.1")
    ET.SubElement(devices, "memballoon", model="virtio")


def domain_xml(plan: GuestPlan) -> str:
    """The domain XML document for a plan."""
    domain = ET.Element("domain", type=plan.platform.domain_type)
    ET.SubElement(domain, "name").text = plan.name
    ET.SubElement(domain, "uuid").text = plan.uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(plan.memory_mib)
    ET.SubElement(domain, "currentMemory", unit="MiB").text = str(plan.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(plan.vcpus)
    _os(domain, plan)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")  # without ACPI a guest cannot be shut down gracefully
    ET.SubElement(features, "apic")
    cpus.cpu_element(domain, plan.cpu)
    ET.SubElement(domain, "clock", offset="utc")
    _devices(domain, plan)
    return ET.tostring(domain, encoding="unicode")


def define_guest(conn: HostConnection, plan: GuestPlan) -> None:
    """Define the planned guest on its host (persistent, not started)."""
    domains.define(conn, domain_xml(plan))
