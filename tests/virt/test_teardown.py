"""Deleting a guest on the test driver: which disks go, which stay and why, and the undefine."""

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import Conflict, NotFound
from app.virt import teardown
from app.virt.connection import HostConnection

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


def _domain(node: ET.Element, name: str, uuid: str, *, running: bool) -> ET.Element:
    domain = ET.SubElement(node, "domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "uuid").text = uuid
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    ET.SubElement(domain, "vcpu").text = "1"
    ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
    if not running:
        ET.SubElement(domain, f"{{{TEST_NS}}}runstate").text = "5"
    return ET.SubElement(domain, "devices")


def storage_node(tmp_path: Path) -> str:
    """A test-driver host with a dir pool and three guests; its URI."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for key, value in CPU.items():
        ET.SubElement(cpu, key).text = value
    ET.SubElement(node, "memory").text = "8388608"
    pool = ET.SubElement(node, "pool", type="dir")
    ET.SubElement(pool, "name").text = "vdtest-images"
    ET.SubElement(pool, "uuid").text = "b1000000-0000-4000-8000-000000000001"
    ET.SubElement(ET.SubElement(pool, "target"), "path").text = POOL
    for name, backing in VOLUMES.items():
        _volume(pool, name, backing)
    owner = _domain(node, "owner", OWNER, running=True)
    _disk(owner, "vda", file=f"{POOL}/own.qcow2")
    _disk(owner, "vdb", pool="vdtest-images", volume="shared.qcow2")
    _disk(owner, "vdc", file=f"{POOL}/golden.qcow2")
    _disk(owner, "vdd", file="/srv/elsewhere/loose.img")
    _disk(owner, "hdc", device="cdrom", file="/srv/iso/install.iso")
    _disk(owner, "hdd", device="cdrom")
    _disk(_domain(node, "sharer", SHARER, running=False), "vda", file=f"{POOL}/shared.qcow2")
    _disk(_domain(node, "lone", LONE, running=False), "vda", file=f"{POOL}/lone.qcow2")
    path = tmp_path / "node-storage.xml"
    ET.ElementTree(node).write(path, encoding="unicode")
    return f"test://{path}"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[HostConnection]:
    """A private test-driver host built from storage_node."""
    connection = HostConnection(storage_node(tmp_path), keepalive=(3, 3), on_close=lambda _r: None)
    yield connection
    connection.close()


def volumes(conn: HostConnection) -> set[str]:
    """Every volume name in the pool."""
    pool = conn.lv.storagePoolLookupByName("vdtest-images")
    return {v.name() for v in pool.listAllVolumes(0)}


def guest_names(conn: HostConnection) -> set[str]:
    """Every guest on the host."""
    return {g.spec.name for g in conn.guests()}


EXPECTED_KEPT = {
    "/srv/iso/install.iso": "cdrom media are never removed",
    "/srv/elsewhere/loose.img": teardown.NOT_A_VOLUME,
    f"{POOL}/shared.qcow2": "also used by guest sharer",
    f"{POOL}/golden.qcow2": f"backing image of {POOL}/clone.qcow2",
    f"{POOL}/base.qcow2": (f"backing image of {POOL}/own.qcow2; backing images are never removed"),
}


def test_the_plan_removes_only_volumes_that_nothing_else_uses(conn: HostConnection) -> None:
    plan = teardown.plan_storage(conn, OWNER)

    assert plan.remove == (f"{POOL}/own.qcow2",)
    assert {k.path: k.reason for k in plan.keep} == EXPECTED_KEPT


def test_a_running_guest_is_refused_without_force_and_left_alone(conn: HostConnection) -> None:
    with pytest.raises(Conflict) as refused:
        teardown.delete_guest(conn, OWNER, remove_storage=True, force=False)

    assert refused.value.extra == {"state": "running"}
    assert "it is running" in refused.value.message
    assert "owner" in guest_names(conn)
    assert "own.qcow2" in volumes(conn)


def test_force_deletes_a_running_guest_with_its_snapshots_and_own_volume(
    conn: HostConnection,
) -> None:
    snapshot = "<domainsnapshot><name>before</name></domainsnapshot>"
    conn.domain(OWNER).snapshotCreateXML(snapshot, 0)

    deletion = teardown.delete_guest(conn, OWNER, remove_storage=True, force=True)

    assert (deletion.name, deletion.removed) == ("owner", (f"{POOL}/own.qcow2",))
    assert {k.path: k.reason for k in deletion.kept} == EXPECTED_KEPT
    assert guest_names(conn) == {"sharer", "lone"}
    assert volumes(conn) == set(VOLUMES) - {"own.qcow2"}


def test_without_remove_storage_every_disk_is_kept_and_listed(conn: HostConnection) -> None:
    deletion = teardown.delete_guest(conn, LONE, remove_storage=False, force=False)

    assert deletion.removed == ()
    assert deletion.kept == (teardown.KeptDisk(f"{POOL}/lone.qcow2", teardown.NOT_REQUESTED),)
    assert "lone.qcow2" in volumes(conn)
    assert "lone" not in guest_names(conn)


def test_a_transient_guest_is_gone_once_forced_off(conn: HostConnection) -> None:
    root = ET.fromstring(conn.domain(LONE).XMLDesc(0))
    root.find("name").text = "transient"
    root.remove(root.find("uuid"))
    transient = conn.lv.createXML(ET.tostring(root, encoding="unicode"), 0)

    deletion = teardown.delete_guest(conn, transient.UUIDString(), remove_storage=False, force=True)

    assert deletion.name == "transient"
    assert guest_names(conn) == {"owner", "sharer", "lone"}


def test_an_unknown_guest_is_not_found(conn: HostConnection) -> None:
    with pytest.raises(NotFound):
        teardown.delete_guest(
            conn, "00000000-0000-4000-8000-00000000dead", remove_storage=False, force=True
        )
