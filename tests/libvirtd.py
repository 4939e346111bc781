"""Small throwaway KVM guests on the real libvirtd (qemu:///system), made and removed by virsh."""

import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSTEM_URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")


def virsh(*args: str, check: bool = True) -> str:
    """Run virsh against qemu:///system and return its output."""
    done = subprocess.run(
        ["virsh", "-c", SYSTEM_URI, *args], capture_output=True, text=True, timeout=60
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class ThrowawayGuest:
    """A guest a test made."""

    name: str
    uuid: str
    disk: Path


def domain_xml(
    name: str, guest_uuid: str, disk: Path, *, nic: bool = False, fmt: str = "qcow2"
) -> str:
    """A 64 MiB, 1-vCPU guest with one empty disk (qcow2 unless fmt says) and, with nic, a
    user-mode NIC."""
    domain = ET.Element("domain", type="kvm" if Path("/dev/kvm").exists() else "qemu")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = guest_uuid
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    devices = ET.SubElement(domain, "devices")
    disk_el = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk_el, "driver", name="qemu", type=fmt)
    ET.SubElement(disk_el, "source", file=str(disk))
    ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
    if nic:
        ET.SubElement(ET.SubElement(devices, "interface", type="user"), "model", type="virtio")
    ET.SubElement(devices, "graphics", type="vnc", listen="127.0.0.1", autoport="yes")
    return ET.tostring(domain, encoding="unicode")


@contextmanager
def throwaway_guest(
    tmp_path: Path,
    *,
    directory: Path = IMAGES,
    size: str = "16M",
    nic: bool = False,
    fmt: str = "qcow2",
) -> Iterator[ThrowawayGuest]:
    """Define a uniquely named guest; destroy and undefine it and delete its disk afterwards."""
    name = f"vdtest-{uuid.uuid4().hex[:10]}"
    guest = ThrowawayGuest(name=name, uuid=str(uuid.uuid4()), disk=directory / f"{name}.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(guest.disk), size], check=True)
    xml_file = tmp_path / f"{name}.xml"
    xml_file.write_text(domain_xml(guest.name, guest.uuid, guest.disk, nic=nic, fmt=fmt))
    try:
        virsh("define", str(xml_file))
        yield guest
    finally:
        virsh("destroy", guest.uuid, check=False)
        virsh("undefine", guest.uuid, "--snapshots-metadata", "--checkpoints-metadata", check=False)
        guest.disk.unlink(missing_ok=True)


def qemu_io(disk: Path, command: str, fmt: str = "qcow2") -> subprocess.CompletedProcess:
    """Run one qemu-io command on a (shut-off) guest's disk, read as fmt."""
    return subprocess.run(
        ["qemu-io", "-f", fmt, "-c", command, str(disk)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def holds(disk: Path, pattern: str, length: str = "64k", fmt: str = "qcow2") -> bool:
    """Whether the disk's first `length` bytes, read as fmt, are all this byte."""
    done = qemu_io(disk, f"read -P {pattern} 0 {length}", fmt)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def restart_libvirtd(timeout: float = 30) -> None:
    """Start libvirtd again after a test killed it, and wait until it answers."""
    subprocess.run(["libvirtd", "-d"], check=True, timeout=30)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            subprocess.run(["virsh", "-c", SYSTEM_URI, "version"], capture_output=True).returncode
            == 0
        ):
            return
        time.sleep(0.2)
    raise RuntimeError("libvirtd did not come back")
