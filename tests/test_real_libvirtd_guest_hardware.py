"""A guest's hardware changed on the real libvirtd: a running guest takes a new disk, grows it,
lets go of it, takes and lets go of a NIC, has its CD-ROM changed and ejected and its balloon
lowered, all live and in its config, as virsh and qemu-img show; a shut-off guest's volume grows
and its boot order changes for the next start."""

import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.console_guest import console_guest
from tests.libvirtd import SYSTEM_URI, virsh
from tests.storage import pool_volumes, throwaway_pool

pytestmark = pytest.mark.libvirtd
GIB = 1024**3


@pytest.fixture
def pool() -> Iterator[str]:
    with throwaway_pool() as name:
        yield name


@pytest.fixture
def network(tmp_path: Path) -> Iterator[str]:
    """A transient isolated libvirt network: a bridge with no address, no DHCP, no forwarding."""
    name = f"vdtest-net-{uuid.uuid4().hex[:8]}"
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", name=f"vdt{uuid.uuid4().hex[:8]}")
    xml = tmp_path / f"{name}.xml"
    xml.write_text(ET.tostring(root, encoding="unicode"))
    virsh("net-create", str(xml))
    try:
        yield name
    finally:
        virsh("net-destroy", name, check=False)


def volume_path(pool: str, name: str) -> str:
    return virsh("vol-path", "--pool", pool, name).strip()


def image_size(path: str) -> int:
    """The virtual size qemu-img reads (sharing the image with a running QEMU)."""
    done = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True
    )
    return json.loads(done.stdout)["virtual-size"]


def targets(name: str, *extra: str) -> dict[str, str]:
    """`virsh domblklist`: target → source ("-" for an empty drive)."""
    lines = virsh("domblklist", name, *extra).splitlines()[2:]
    return dict(line.split(None, 1) for line in lines if line.strip())


def macs(name: str, *extra: str) -> set[str]:
    """The MACs `virsh domiflist` lists."""
    lines = virsh("domiflist", name, *extra).splitlines()[2:]
    return {line.split()[-1] for line in lines if line.strip()}


def synced(client: TestClient, host: dict) -> None:
    """Wait until the host's guests are in virtdeck's inventory."""
    done = client.post(f"/api/v1/hosts/{host['id']}/refresh", params={"wait": 15})
    assert done.status_code in (200, 202), done.text


def balloon_settles(name: str, wanted: str, timeout: float = 20) -> str:
    """`virsh dominfo`'s "Used memory" once it is wanted (the guest gives memory back in
    steps), or as it is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        lines = virsh("dominfo", name).splitlines()
        used = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Used"))
        if used == wanted or time.monotonic() > deadline:
            return used
        time.sleep(0.2)


def test_a_running_guest_takes_grows_and_lets_go_of_a_disk_and_a_nic_live(
    client: TestClient, tmp_path: Path, pool: str, network: str
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with console_guest(tmp_path, virtio=True) as guest:
        synced(client, host)
        base = f"/api/v1/guests/{guest.uuid}"
        added = client.post(f"{base}/disks", json={"disk": {"pool": pool, "size_gib": 1}})
        assert added.status_code == 200, added.text
        target, volume = added.json()["target"], added.json()["volume"]
        path = volume_path(pool, volume)
        live_after_add, config_after_add = targets(guest.name), targets(guest.name, "--inactive")
        shown = client.get(f"{base}/hardware").json()

        shrink = client.post(f"{base}/disks/{target}/grow", json={"size_gib": 1})
        grown = client.post(f"{base}/disks/{target}/grow", json={"size_gib": 2})
        blkinfo = virsh("domblkinfo", guest.name, target)
        size_after_grow = image_size(path)

        detached = client.delete(f"{base}/disks/{target}")
        live_after_detach = targets(guest.name)
        config_after_detach = targets(guest.name, "--inactive")

        nic = client.post(f"{base}/nics", json={"network": network})
        mac = nic.json()["mac"]
        live_macs, config_macs = macs(guest.name), macs(guest.name, "--inactive")
        twice = client.post(f"{base}/nics", json={"network": network, "mac": mac.upper()})
        nic_gone = client.delete(f"{base}/nics/{mac}")
        macs_after = macs(guest.name) | macs(guest.name, "--inactive")

    assert added.json()["live"] is True
    assert live_after_add[target] == path and config_after_add[target] == path
    disk = next(d for d in shown["disks"] if d["target"] == target)
    assert (disk["pool"], disk["volume"], disk["format"]) == (pool, volume, "qcow2")
    assert disk["capacity"] == GIB and disk["allocation"] > 0

    assert shrink.status_code == 422 and shrink.json()["field"] == "size_gib", shrink.text
    assert grown.status_code == 200 and grown.json()["live"] is True, grown.text
    assert f"Capacity:       {2 * GIB}" in blkinfo
    assert size_after_grow == 2 * GIB

    assert detached.status_code == 200, detached.text
    assert (detached.json()["live"], detached.json()["pending"]) == (True, False)
    assert target not in live_after_detach and target not in config_after_detach
    assert volume in pool_volumes(pool)  # the volume is kept

    assert nic.status_code == 200 and nic.json()["live"] is True, nic.text
    assert mac in live_macs and mac in config_macs
    assert twice.status_code == 409 and twice.json()["field"] == "mac", twice.text
    assert nic_gone.status_code == 200 and nic_gone.json()["pending"] is False, nic_gone.text
    assert mac not in macs_after


def test_a_running_guests_cd_is_changed_and_ejected_and_its_balloon_lowered_live(
    client: TestClient, tmp_path: Path, pool: str
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    for name in ("first.iso", "second.iso"):
        virsh("vol-create-as", pool, name, "1M", "--format", "raw")
    with console_guest(tmp_path, virtio=True) as guest:
        synced(client, host)
        base = f"/api/v1/guests/{guest.uuid}"
        first = client.put(
            f"{base}/media/hdc", json={"cdrom": {"pool": pool, "volume": "first.iso"}}
        )
        holds_first = targets(guest.name)["hdc"], targets(guest.name, "--inactive")["hdc"]
        second = client.put(
            f"{base}/media/hdc", json={"cdrom": {"pool": pool, "volume": "second.iso"}}
        )
        holds_second = targets(guest.name)["hdc"], targets(guest.name, "--inactive")["hdc"]
        ejected = client.delete(f"{base}/media/hdc")
        holds_after_eject = targets(guest.name)["hdc"], targets(guest.name, "--inactive")["hdc"]

        lowered = client.patch(f"{base}/settings", json={"memory_mib": 64})
        used = balloon_settles(guest.name, "65536 KiB")
        config = ET.fromstring(virsh("dumpxml", "--inactive", guest.name))

    assert first.status_code == 200 and first.json()["live"] is True, first.text
    assert holds_first == (volume_path(pool, "first.iso"),) * 2
    assert second.status_code == 200, second.text
    assert holds_second == (volume_path(pool, "second.iso"),) * 2
    assert ejected.status_code == 200, ejected.text
    assert holds_after_eject == ("-", "-")

    assert lowered.status_code == 200, lowered.text
    assert (lowered.json()["live"], lowered.json()["next_start"]) == (["memory"], [])
    assert used == "65536 KiB"  # the guest's driver gave the memory back
    assert config.findtext("currentMemory") == "65536"


def test_a_shut_off_guests_volume_grows_and_its_boot_order_waits_for_its_next_start(
    client: TestClient, tmp_path: Path, pool: str
) -> None:
    host = add_host(client, "local", SYSTEM_URI)
    with console_guest(tmp_path, virtio=True, start=False) as guest:
        synced(client, host)
        base = f"/api/v1/guests/{guest.uuid}"
        added = client.post(f"{base}/disks", json={"disk": {"pool": pool, "size_gib": 1}})
        target, volume = added.json()["target"], added.json()["volume"]
        grown = client.post(f"{base}/disks/{target}/grow", json={"size_gib": 3})
        size = image_size(volume_path(pool, volume))
        boot = client.patch(f"{base}/settings", json={"boot_order": ["cdrom", "hd"]})
        config = ET.fromstring(virsh("dumpxml", "--inactive", guest.name))
        settings = client.get(f"{base}/settings").json()
        client.delete(f"{base}/disks/{target}")

    assert added.status_code == 200 and added.json()["live"] is False, added.text
    assert grown.status_code == 200 and grown.json()["live"] is False, grown.text
    assert size == 3 * GIB
    assert boot.status_code == 200, boot.text
    assert [b.get("dev") for b in config.findall("os/boot")] == ["cdrom", "hd"]
    assert (settings["boot_order"], settings["firmware"]) == (["cdrom", "hd"], "bios")
