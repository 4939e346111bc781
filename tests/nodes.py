"""Test-driver hosts built in code: the pieces of a node file, and the host for deleting guests
(a dir pool whose volumes back, share and clone one another, three guests using them every way a
disk can)."""

import xml.etree.ElementTree as ET
from pathlib import Path

POOL = "/srv/vdtest-images"
OWNER = "c1000000-0000-4000-8000-000000000001"  # running; every kind of disk
SHARER = "c1000000-0000-4000-8000-000000000002"  # shut off; shares a volume with OWNER
LONE = "c1000000-0000-4000-8000-000000000003"  # shut off; one volume of its own
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
CPU = {"mhz": "2400", "model": "x86_64", "nodes": "1", "sockets": "1", "cores": "2", "threads": "1"}
# name -> backing volume (or None)
VOLUMES = {
    "own.qcow2": "base.qcow2",
    "base.qcow2": None,
    "shared.qcow2": None,
    "golden.qcow2": None,
    "clone.qcow2": "golden.qcow2",
    "lone.qcow2": None,
}


def _volume(pool: ET.Element, name: str, backing: str | None) -> None:
    volume = ET.SubElement(pool, "volume", type="file")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="MiB").text = "16"
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "path").text = f"{POOL}/{name}"
    ET.SubElement(target, "format", type="qcow2")
    if backing:
        ET.SubElement(ET.SubElement(volume, "backingStore"), "path").text = f"{POOL}/{backing}"


def _disk(devices: ET.Element, dev: str, *, device: str = "disk", **source: str) -> None:
    kind = "volume" if "pool" in source else "file"
    disk = ET.SubElement(devices, "disk", type=kind, device=device)
    if source:
        ET.SubElement(disk, "source", **source)
    ET.SubElement(disk, "target", dev=dev)


def new_node(memory_kib: int) -> ET.Element:
    """A test-driver node of 2 cores and this much memory, as yet without guests."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for key, value in CPU.items():
        ET.SubElement(cpu, key).text = value
    ET.SubElement(node, "memory").text = str(memory_kib)
    return node


def add_domain(
    node: ET.Element, name: str, uuid: str, *, running: bool, memory_mib: int = 64
) -> ET.Element:
    """A guest of one vCPU on the node; its <devices>, to add disks and NICs to."""
    domain = ET.SubElement(node, "domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(domain, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
    if not running:
        ET.SubElement(domain, f"{{{TEST_NS}}}runstate").text = "5"
    return ET.SubElement(domain, "devices")


def storage_node(tmp_path: Path) -> str:
    """A test-driver host with a dir pool and three guests; its URI."""
    node = new_node(8 * 1024 * 1024)
    pool = ET.SubElement(node, "pool", type="dir")
    ET.SubElement(pool, "name").text = "vdtest-images"
    ET.SubElement(pool, "uuid").text = "b1000000-0000-4000-8000-000000000001"
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = POOL
    for name, backing in VOLUMES.items():
        _volume(pool, name, backing)
    owner = add_domain(node, "owner", OWNER, running=True)
    _disk(owner, "vda", file=f"{POOL}/own.qcow2")
    _disk(owner, "vdb", pool="vdtest-images", volume="shared.qcow2")
    _disk(owner, "vdc", file=f"{POOL}/golden.qcow2")
    _disk(owner, "vdd", file="/srv/elsewhere/loose.img")
    _disk(owner, "hdc", device="cdrom", file="/srv/iso/install.iso")
    _disk(owner, "hdd", device="cdrom")
    _disk(add_domain(node, "sharer", SHARER, running=False), "vda", file=f"{POOL}/shared.qcow2")
    _disk(add_domain(node, "lone", LONE, running=False), "vda", file=f"{POOL}/lone.qcow2")
    path = tmp_path / "node-storage.xml"
    ET.ElementTree(node).write(path, encoding="unicode")
    return f"test://{path}"
