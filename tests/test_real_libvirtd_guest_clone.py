"""Cloning on the real libvirtd, through the API: a shut-off guest and a running one (through a
push-mode backup job, a point-in-time copy) become a second guest with another UUID, other MACs
and its own volumes in the chosen pool, whose contents equal the source's (`qemu-img compare`);
the clone boots. The guests boot a tiny kernel (tests/console_guest.py) with a qcow2 disk and a
NIC added."""

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.console_guest import READY, ConsoleGuest, console_guest, wait_for_log
from tests.libvirtd import IMAGES, SYSTEM_URI, qemu_io, virsh
from tests.polling import finished_job
from tests.storage import pool_volumes, remove_guest, throwaway_pool

pytestmark = pytest.mark.libvirtd
CLONE_TIMEOUT = 120


def add_disk_and_nic(guest: ConsoleGuest, disk: Path, tmp_path: Path) -> None:
    """Give the (shut-off) guest a virtio qcow2 disk and a user-mode NIC."""
    domain = ET.fromstring(virsh("dumpxml", "--inactive", guest.uuid))
    devices = domain.find("devices")
    element = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(element, "driver", name="qemu", type="qcow2")
    ET.SubElement(element, "source", file=str(disk))
    ET.SubElement(element, "target", dev="vda", bus="virtio")
    ET.SubElement(ET.SubElement(devices, "interface", type="user"), "model", type="virtio")
    xml_file = tmp_path / f"{guest.name}-disk.xml"
    xml_file.write_text(ET.tostring(domain, encoding="unicode"))
    virsh("define", str(xml_file))


@contextmanager
def guest_with_a_disk(
    tmp_path: Path, pool: str, *, size: str = "16M", written: str = "4M"
) -> Iterator[tuple[ConsoleGuest, Path]]:
    """A shut-off console guest with a qcow2 disk of size in pool, its first bytes written."""
    with console_guest(tmp_path, start=False) as guest:
        disk = IMAGES / pool / f"{guest.name}.qcow2"
        virsh("vol-create-as", pool, disk.name, size, "--format", "qcow2")
        assert qemu_io(disk, f"write -P 0x5a 0 {written}").returncode == 0
        add_disk_and_nic(guest, disk, tmp_path)
        yield guest, disk


def definition(name: str) -> ET.Element:
    return ET.fromstring(virsh("dumpxml", "--inactive", name))


def macs(name: str) -> list[str]:
    return [m.get("address") for m in definition(name).iterfind("devices/interface/mac")]


def disk_paths(name: str) -> list[str]:
    return [s.get("file") for s in definition(name).iterfind("devices/disk/source")]


def same_contents(first: str, second: str) -> subprocess.CompletedProcess:
    """`qemu-img compare` of two images (-U: one may be in use by a running guest)."""
    return subprocess.run(
        ["qemu-img", "compare", "-U", first, second], capture_output=True, text=True, timeout=60
    )


def clone(client: TestClient, uuid: str, name: str, pool: str) -> dict:
    """Clone through the API and wait for the job; the finished job."""
    started = client.post(f"/api/v1/guests/{uuid}/clone", json={"name": name, "pool": pool})
    assert started.status_code == 202, started.text
    return finished_job(client, started.json()["id"], timeout=CLONE_TIMEOUT)


def boots(guest: ConsoleGuest, clone_name: str) -> None:
    """Start the clone and wait for its shell on the serial port (it logs to the source's file)."""
    guest.serial_log.unlink(missing_ok=True)
    virsh("start", clone_name)
    wait_for_log(guest, READY, timeout=60)


def test_a_shut_off_guest_is_cloned_into_another_pool_and_the_clone_boots(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with (
        throwaway_pool() as pool,
        throwaway_pool() as target,
        guest_with_a_disk(tmp_path, pool) as (guest, disk),
    ):
        name = f"{guest.name}-copy"
        try:
            client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
            virsh("vol-create-as", target, f"{name}-vda.qcow2", "1M")
            taken = client.post(
                f"/api/v1/guests/{guest.uuid}/clone", json={"name": name, "pool": target}
            )
            virsh("vol-delete", "--pool", target, f"{name}-vda.qcow2")
            job = clone(client, guest.uuid, name, target)
            copy = job["result"]["disks"]["vda"]
            compared = same_contents(str(disk), copy)
            listed = client.get(f"/api/v1/guests/{job['result']['guest_uuid']}")
            source_macs, clone_macs = macs(guest.name), macs(name)
            boots(guest, name)
            source_state = virsh("domstate", guest.uuid).strip()
        finally:
            remove_guest(name)

    assert taken.status_code == 409 and taken.json()["field"] == "name", taken.text
    assert (job["status"], job["error"]) == ("succeeded", None), job
    assert job["result"]["guest_uuid"] != guest.uuid
    assert listed.status_code == 200 and listed.json()["name"] == name
    assert copy == str(IMAGES / target / f"{name}-vda.qcow2")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert len(clone_macs) == 1 and clone_macs != source_macs
    assert source_state == "shut off"


def test_a_running_guest_is_cloned_at_one_instant_and_the_clone_boots(
    client: TestClient, tmp_path: Path
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with throwaway_pool() as pool, guest_with_a_disk(tmp_path, pool) as (guest, disk):
        name = f"{guest.name}-copy"
        try:
            virsh("start", guest.uuid)
            wait_for_log(guest, READY)
            client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
            job = clone(client, guest.uuid, name, pool)
            copy = job["result"]["disks"]["vda"] if job["result"] else ""
            compared = same_contents(str(disk), copy)
            uuids = {virsh("domuuid", n).strip() for n in (guest.name, name)}
            source_macs, clone_macs = macs(guest.name), macs(name)
            paths = disk_paths(name)
            virsh("destroy", guest.uuid)
            boots(guest, name)
        finally:
            remove_guest(name)

    assert (job["status"], job["error"]) == ("succeeded", None), job
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert len(uuids) == 2
    assert len(clone_macs) == 1 and clone_macs != source_macs
    assert paths == [copy] and copy != str(disk)


def test_a_cancelled_clone_leaves_nothing_behind(client: TestClient, tmp_path: Path) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with (
        throwaway_pool() as pool,
        throwaway_pool() as target,
        guest_with_a_disk(tmp_path, pool, size="1G", written="512M") as (guest, _disk),
    ):
        name = f"{guest.name}-copy"
        try:
            client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
            started = client.post(
                f"/api/v1/guests/{guest.uuid}/clone", json={"name": name, "pool": target}
            )
            # The copy takes a while; the job stops at its next report at the latest.
            cancel = client.post(f"/api/v1/jobs/{started.json()['id']}/cancel")
            job = finished_job(client, started.json()["id"], timeout=CLONE_TIMEOUT)
            left = pool_volumes(target)
            defined = virsh("list", "--all", "--name").split()
            busy = client.get(f"/api/v1/guests/{guest.uuid}").json()["busy_action"]
        finally:
            remove_guest(name)

    assert cancel.status_code == 202, cancel.text
    assert job["status"] == "cancelled", job
    assert left == [] and name not in defined
    assert busy is None
