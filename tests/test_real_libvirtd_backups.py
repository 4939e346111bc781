"""Backups on the real libvirtd: the bytes come back, in place and as a new guest."""

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import add_host
from tests.libvirtd import IMAGES, SYSTEM_URI, holds, qemu_io, throwaway_guest, virsh
from tests.storage import throwaway_pool

pytestmark = pytest.mark.libvirtd


def finished_job(client: TestClient, job_id: int, timeout: float = 120) -> dict:
    """Poll the job until it ends; its last state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")


def back_up(client: TestClient, uuid: str) -> dict:
    """Take a backup through the API and wait for it; the backup record afterwards."""
    started = client.post(f"/api/v1/guests/{uuid}/backups")
    assert started.status_code == 202, started.text
    job = finished_job(client, started.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return client.get(f"/api/v1/backups/{started.json()['backup']['id']}").json()


def restore(client: TestClient, backup_id: int, **body) -> dict:
    """Restore through the API and wait; the job afterwards."""
    started = client.post(f"/api/v1/backups/{backup_id}/restore", json=body)
    assert started.status_code == 202, started.text
    return finished_job(client, started.json()["job"]["id"])


def devices(uuid: str) -> list[tuple[str, str | None, str | None]]:
    """What `virsh dumpxml` shows of the guest's devices: tag, type, target."""
    root = ET.fromstring(virsh("dumpxml", uuid, "--inactive"))
    return sorted(
        (
            d.tag,
            d.get("type"),
            (d.find("target").get("dev") if d.find("target") is not None else None),
        )
        for d in root.find("devices")
    )


def macs(uuid: str) -> list[str]:
    """The guest's MAC addresses."""
    root = ET.fromstring(virsh("dumpxml", uuid, "--inactive"))
    return [m.get("address") for m in root.findall("devices/interface/mac")]


def test_backups_of_a_shut_off_and_a_running_guest_restore_the_same_bytes(
    client: TestClient, tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, nic=True) as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 1M").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        shown = devices(guest.uuid)

        offline = back_up(client, guest.uuid)
        virsh("start", guest.uuid)
        online = back_up(client, guest.uuid)
        virsh("destroy", guest.uuid)

        assert (offline["status"], offline["guest_state"]) == ("succeeded", "shutoff")
        assert (online["status"], online["guest_state"]) == ("succeeded", "running")
        for backup in (offline, online):
            assert sorted(f["name"] for f in backup["files"]) == ["disk-vda.qcow2", "domain.xml"]
            assert backup["size_bytes"] == sum(f["size"] for f in backup["files"]) > 1 << 20
        directory = Path(client.app.state.settings.backup_dir) / offline["path"]
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["guest"]["uuid"] == guest.uuid
        assert manifest["libvirt_version"] and manifest["qemu_version"]
        assert [f["sha256"] for f in manifest["files"]] == [f["sha256"] for f in offline["files"]]
        assert not list(directory.glob("*.part"))

        for backup in (offline, online):
            virsh("undefine", guest.uuid)
            virsh("vol-delete", str(guest.disk))
            assert not guest.disk.exists()
            job = restore(client, backup["id"], mode="in_place")
            assert job["status"] == "succeeded", job
            assert holds(guest.disk, "0x5a", "1M"), (
                f"restored from the {backup['guest_state']} backup"
            )
            assert devices(guest.uuid) == shown
            assert virsh("domuuid", guest.name).strip() == guest.uuid

        copy = f"{guest.name}-copy"
        try:
            job = restore(client, online["id"], mode="new", name=copy)
            assert job["status"] == "succeeded", job
            new_uuid = job["result"]["guest_uuid"]
            assert virsh("domuuid", copy).strip() == new_uuid != guest.uuid
            assert virsh("domuuid", guest.name).strip() == guest.uuid
            assert macs(new_uuid) and macs(guest.uuid)
            assert set(macs(new_uuid)).isdisjoint(macs(guest.uuid))
            new_disk = Path(job["result"]["disks"]["vda"])
            assert new_disk != guest.disk and holds(new_disk, "0x5a", "1M")
        finally:
            virsh("undefine", copy, check=False)
