"""Backups on the real libvirtd: the bytes come back, in place and as a new guest; faults (disk
full, libvirtd killed, a changed byte) leave no partial files and an untouched guest."""

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import transaction
from app.models import Backup, Host
from app.services.backups.digests import recorded
from tests.backups import (
    BACKUP_TIMEOUT,
    back_up,
    backup_files_left,
    restore,
    start_backup,
    wait_until_copying,
)
from tests.conftest import add_host
from tests.libvirtd import (
    IMAGES,
    SYSTEM_URI,
    ThrowawayGuest,
    holds,
    qemu_io,
    restart_libvirtd,
    throwaway_guest,
    virsh,
)
from tests.polling import finished_job
from tests.storage import throwaway_pool

pytestmark = pytest.mark.libvirtd


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


def backing_stores(uuid: str) -> list[str]:
    """Each disk's <backingStore> as `virsh dumpxml` shows it ("" when it has none)."""
    root = ET.fromstring(virsh("dumpxml", uuid, "--inactive"))
    return [
        ET.tostring(b, encoding="unicode").strip() if (b := d.find("backingStore")) is not None
        else ""
        for d in root.findall("devices/disk")
    ]  # fmt: skip


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
        for backup, disk in ((offline, "disk-vda.qcow2"), (online, "disk-vda.extents")):
            assert sorted(f["name"] for f in backup["files"]) == [disk, "domain.xml"]
            assert backup["size_bytes"] == sum(f["size"] for f in backup["files"]) > 1 << 20
        directory = Path(client.app.state.settings.backup_dir) / offline["path"]
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["guest"]["uuid"] == guest.uuid
        assert manifest["libvirt_version"] and manifest["qemu_version"]
        listed = [(f["algorithm"], f["digest"]) for f in offline["files"]]
        assert [recorded(f) for f in manifest["files"]] == listed
        assert not list(directory.glob("*.part"))

        for backup in (offline, online):
            # The running backup left its checkpoint (the next one's starting point).
            virsh("undefine", guest.uuid, "--checkpoints-metadata")
            virsh("vol-delete", str(guest.disk))
            assert not guest.disk.exists()
            job = restore(client, backup["id"], mode="in_place")
            assert job["status"] == "succeeded", job
            assert holds(guest.disk, "0x5a", "1M"), (
                f"restored from the {backup['guest_state']} backup"
            )
            assert devices(guest.uuid) == shown
            assert backing_stores(guest.uuid) == ["<backingStore />"]
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
            assert backing_stores(new_uuid) == ["<backingStore />"]
            new_disk = Path(job["result"]["disks"]["vda"])
            assert new_disk != guest.disk and holds(new_disk, "0x5a", "1M")
        finally:
            virsh("undefine", copy, check=False)


def test_disk_full_fails_the_backup_and_leaves_no_partial_files(
    make_client, tmp_path: Path
) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        client = make_client(backup_dir=str(mount))
        with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
            assert qemu_io(guest.disk, "write -P 0x11 0 8M").returncode == 0
            add_host(client, "local", SYSTEM_URI)

            started = start_backup(client, guest.uuid)
            job = finished_job(client, started["job"]["id"], timeout=BACKUP_TIMEOUT)
            backup = client.get(f"/api/v1/backups/{started['backup']['id']}").json()

            assert job["status"] == "failed" and "No space left on device" in job["error"], job
            assert backup["status"] == "failed" and "No space left" in backup["error"]
            assert backup_files_left(mount) == []
            assert holds(guest.disk, "0x11", "8M")
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_libvirtd_killed_during_a_backup_fails_it_with_the_reason(
    make_client, tmp_path: Path
) -> None:
    client = make_client(backup_bandwidth_mib=8)
    root = Path(client.app.state.settings.backup_dir)
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        assert qemu_io(guest.disk, "write -P 0x22 0 12M").returncode == 0
        add_host(client, "local", SYSTEM_URI)

        started = start_backup(client, guest.uuid)
        wait_until_copying(client, started["job"]["id"])
        killed = subprocess.run(["pkill", "-KILL", "-x", "libvirtd"]).returncode
        try:
            job = finished_job(client, started["job"]["id"], timeout=BACKUP_TIMEOUT)
        finally:
            restart_libvirtd()
        backup = client.get(f"/api/v1/backups/{started['backup']['id']}").json()

        assert killed == 0
        assert job["status"] == "failed" and job["error"], job
        assert backup["status"] == "failed" and backup["error"] == job["error"]
        assert backup_files_left(root) == []


def test_a_changed_byte_makes_the_backup_corrupt_and_the_restore_is_refused(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        assert qemu_io(guest.disk, "write -P 0x33 0 1M").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        backup = back_up(client, guest.uuid)
        image = Path(client.app.state.settings.backup_dir) / backup["path"] / "disk-vda.qcow2"
        with open(image, "r+b") as handle:  # one byte inside the written data
            handle.seek(image.stat().st_size - 4096)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        assert qemu_io(guest.disk, "write -P 0x44 0 1M").returncode == 0
        xml_before = virsh("dumpxml", guest.uuid, "--inactive")

        # A restore started before anyone verified: the job verifies first and refuses.
        job = restore(client, backup["id"], mode="in_place")
        after_job = client.get(f"/api/v1/backups/{backup['id']}").json()
        verified = client.post(f"/api/v1/backups/{backup['id']}/verify")
        refused = client.post(f"/api/v1/backups/{backup['id']}/restore", json={"mode": "in_place"})

        assert (
            job["status"] == "failed"
            and "corrupt" in job["error"]
            and "disk-vda.qcow2" in job["error"]
        )
        assert after_job["status"] == "corrupt" and "disk-vda.qcow2" in after_job["error"]
        assert verified.status_code == 200 and verified.json()["status"] == "corrupt"
        assert verified.json()["error"] == "checksum mismatch: disk-vda.qcow2"
        assert refused.status_code == 409 and refused.json()["status"] == "corrupt"
        assert holds(guest.disk, "0x44", "1M"), "the guest's disk was touched"
        assert virsh("dumpxml", guest.uuid, "--inactive") == xml_before


def test_backup_directories_are_0700_and_backup_files_0600_whatever_the_umask(
    client: TestClient, tmp_path: Path
) -> None:
    root = Path(client.app.state.settings.backup_dir)
    old = os.umask(0o022)
    try:
        with (
            throwaway_pool() as pool,
            throwaway_guest(tmp_path, directory=IMAGES / pool) as guest,
        ):
            add_host(client, "local", SYSTEM_URI)
            back_up(client, guest.uuid)
    finally:
        os.umask(old)

    made = list(root.rglob("*"))
    assert {p.name for p in made if p.is_file()} >= {
        "domain.xml",
        "disk-vda.qcow2",
        "manifest.json",
    }
    modes = {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in made}
    assert modes == {str(p.relative_to(root)): ("0o700" if p.is_dir() else "0o600") for p in made}
    assert all(p.stat().st_uid == os.getuid() for p in made)


@contextmanager
def backup_pointed_at_another_guest(
    client: TestClient, tmp_path: Path, *, before_edit: Callable[[dict], None] = lambda _b: None
) -> Iterator[tuple[ThrowawayGuest, ThrowawayGuest, dict]]:
    """Two guests in a pool with their own bytes (0x5a, 0x77), a backup of the first, and its
    manifest.json edited to name the second's disk: (guest, other, backup)."""
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool) as guest,
        throwaway_guest(tmp_path, directory=IMAGES / pool) as other,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 1M").returncode == 0
        assert qemu_io(other.disk, "write -P 0x77 0 1M").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        backup = back_up(client, guest.uuid)
        before_edit(backup)
        manifest_path = (
            Path(client.app.state.settings.backup_dir) / backup["path"] / "manifest.json"
        )
        manifest = json.loads(manifest_path.read_text())
        manifest["disks"][0]["path"] = str(other.disk)
        manifest_path.write_text(json.dumps(manifest))
        yield guest, other, backup


def test_a_manifest_edited_to_name_another_volume_is_refused_and_that_volume_untouched(
    client: TestClient, tmp_path: Path
) -> None:
    with backup_pointed_at_another_guest(client, tmp_path) as (guest, other, backup):
        refused = client.post(f"/api/v1/backups/{backup['id']}/restore", json={"mode": "in_place"})
        verified = client.post(f"/api/v1/backups/{backup['id']}/verify")

        assert refused.status_code == 409, refused.text
        assert "manifest.json" in refused.json()["detail"]
        assert verified.status_code == 200 and verified.json()["status"] == "corrupt"
        assert "manifest.json" in verified.json()["error"]
        assert holds(other.disk, "0x77", "1M"), "the other guest's disk was overwritten"
        assert holds(guest.disk, "0x5a", "1M")


def test_restoring_in_place_over_a_disk_carrying_a_planted_qcow2_header_never_follows_it(
    client: TestClient, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        assert qemu_io(guest.disk, "write -P 0x5a 0 1M").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        backup = back_up(client, guest.uuid)
        # What a guest can do to its disk: a qcow2 header naming a host file behind it (one that
        # does not exist, so a copy that follows it fails where one that reads it would leak).
        missing = tmp_path / "no-such-host-file"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(missing), "-F", "raw",
             str(guest.disk), "16M"],
            check=True,
        )  # fmt: skip
        virsh("pool-refresh", pool)

        job = restore(client, backup["id"], mode="in_place")

        assert job["status"] == "succeeded", job
        assert holds(guest.disk, "0x5a", "1M")


def as_taken_before_manifest_checks(sessions, backup_id: int) -> None:
    """Make the record look like one an older version wrote: no manifest digest, and disks
    without the volume they came from."""
    with transaction(sessions) as session:
        backup = session.get(Backup, backup_id)
        backup.manifest_sha256 = None
        backup.files = [
            {k: v for k, v in f.items() if k not in ("path", "pool", "capacity")}
            for f in backup.files
        ]


def test_a_backup_older_than_manifest_checks_is_restored_only_as_a_new_guest(
    client: TestClient, sessions, tmp_path: Path
) -> None:
    def older(backup: dict) -> None:
        as_taken_before_manifest_checks(sessions, backup["id"])

    with backup_pointed_at_another_guest(client, tmp_path, before_edit=older) as (
        guest,
        other,
        backup,
    ):
        refused = client.post(f"/api/v1/backups/{backup['id']}/restore", json={"mode": "in_place"})
        if refused.status_code == 202:  # let the unwanted restore end before looking
            finished_job(client, refused.json()["job"]["id"])
        copy = f"{guest.name}-copy"
        try:
            job = restore(client, backup["id"], mode="new", name=copy)
            new_disk = Path(job["result"]["disks"]["vda"]) if job["status"] == "succeeded" else None
        finally:
            virsh("undefine", copy, check=False)

        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            "this backup predates manifest checks: restore it as a new guest, or take a new backup"
        )
        assert holds(other.disk, "0x77", "1M"), "the other guest's disk was overwritten"
        assert job["status"] == "succeeded", job
        assert new_disk is not None and holds(new_disk, "0x5a", "1M")


def test_a_disk_file_changed_while_it_is_restored_fails_the_restore_and_undoes_it(
    make_client, tmp_path: Path
) -> None:
    slow = make_client(backup_bandwidth_mib=4)
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="32M") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 24M").returncode == 0
        add_host(slow, "local", SYSTEM_URI)
        backup = back_up(slow, guest.uuid)
        assert qemu_io(guest.disk, "write -P 0x44 0 1M").returncode == 0
        xml_before = virsh("dumpxml", guest.uuid, "--inactive")
        image = Path(slow.app.state.settings.backup_dir) / backup["path"] / "disk-vda.qcow2"

        started = slow.post(f"/api/v1/backups/{backup['id']}/restore", json={"mode": "in_place"})
        assert started.status_code == 202, started.text
        job_id = started.json()["job"]["id"]
        deadline = time.monotonic() + 30
        while not (job := slow.get(f"/api/v1/jobs/{job_id}").json())["message"].startswith(
            "restoring"
        ):  # checksums verified and images checked: the upload has begun (at 4 MiB/s)
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        with open(image, "r+b") as handle:  # one byte near the end, not yet sent
            handle.seek(image.stat().st_size - 4096)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        job = finished_job(slow, job_id)

        assert job["status"] == "failed", job
        assert "disk-vda.qcow2" in job["error"] and "changed" in job["error"], job
        assert holds(guest.disk, "0x44", "1M"), "the guest's disk was not put back"
        assert virsh("dumpxml", guest.uuid, "--inactive") == xml_before


def test_a_backup_job_never_opens_a_stored_uri_that_fails_the_checks(
    client: TestClient, sessions, tmp_path: Path
) -> None:
    with throwaway_pool() as pool, throwaway_guest(tmp_path, directory=IMAGES / pool) as guest:
        host = add_host(client, "local", SYSTEM_URI)
        # What an older version may have stored: libvirt splits the query at ';' and would
        # connect through whatever socket it names.
        with transaction(sessions) as session:
            session.get(
                Host, host["id"]
            ).uri = "qemu:///system?no_verify=1;socket=/var/run/libvirt/libvirt-sock"

        started = start_backup(client, guest.uuid)
        job = finished_job(client, started["job"]["id"])
        backup = client.get(f"/api/v1/backups/{started['backup']['id']}").json()

        assert job["status"] == "failed", job
        assert job["error"].startswith("uri: ") and "';'" in job["error"], job
        assert backup["status"] == "failed" and backup["error"] == job["error"]


def test_a_raw_guest_backed_up_while_running_comes_back_with_the_same_bytes(
    client: TestClient, tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, fmt="raw") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 1M", "raw").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        virsh("start", guest.uuid)
        try:
            backup = back_up(client, guest.uuid)
        finally:
            virsh("destroy", guest.uuid)
        assert qemu_io(guest.disk, "write -P 0x44 0 1M", "raw").returncode == 0

        copy = f"{guest.name}-copy"
        try:
            as_new = restore(client, backup["id"], mode="new", name=copy)
            assert as_new["status"] == "succeeded", as_new
            new_disk = Path(as_new["result"]["disks"]["vda"])
            new_format = disk_format(as_new["result"]["guest_uuid"])
        finally:
            virsh("undefine", copy, check=False)
        in_place = restore(client, backup["id"], mode="in_place")

        assert holds(new_disk, "0x5a", "1M", new_format), (
            f"the new guest sees its disk as {new_format}"
        )
        assert in_place["status"] == "succeeded", in_place
        in_place_format = disk_format(guest.uuid)
        assert holds(guest.disk, "0x5a", "1M", in_place_format), (
            f"the guest sees its disk as {in_place_format}"
        )


def disk_format(uuid: str) -> str:
    """The format the guest's first disk is opened with."""
    root = ET.fromstring(virsh("dumpxml", uuid, "--inactive"))
    return root.find("devices/disk/driver").get("type")
