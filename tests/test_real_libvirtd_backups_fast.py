"""Fast full backups on the real libvirtd: on a local host a shut-off guest's volume file is read
directly and a running guest's disk through a pull-mode NBD export (one copy, no scratch volume);
each backup equals the disk; a cancelled pull ends the libvirt job; a qemu+ssh host's running
guest is read from the same export through SSH (a shut-off one is still streamed)."""

import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.services import idle_pool
from app.services.backups.digests import backup_hash
from tests.backups import (
    BACKUP_TIMEOUT,
    back_up,
    backup_files_left,
    disk_as_image,
    restore,
    start_backup,
    wait_until_copying,
)
from tests.conftest import add_host
from tests.libvirtd import IMAGES, SYSTEM_URI, holds, qemu_io, throwaway_guest, virsh
from tests.polling import finished_job, until
from tests.sshd import SshHost
from tests.storage import throwaway_pool

pytestmark = pytest.mark.libvirtd


def disk_file(client: TestClient, backup: dict) -> tuple[dict, Path]:
    """The backup's disk entry and its file."""
    entry = next(f for f in backup["files"] if f["kind"] == "disk")
    return entry, Path(client.app.state.settings.backup_dir) / backup["path"] / entry["name"]


def same_image(first: Path, second: Path, fmt: str = "qcow2", second_fmt: str = "qcow2") -> bool:
    """Whether qemu-img compare finds the two images' contents identical (read as fmt and
    second_fmt)."""
    done = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", fmt, "-F", second_fmt, str(first), str(second)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode == 0


def no_backup_job(uuid: str) -> bool:
    """Whether libvirt shows no job on the guest."""
    return "None" in virsh("domjobinfo", uuid).split("\n", 1)[0]


def leftovers() -> list[Path]:
    """The socket directories of NBD exports (on the host: here this machine) and of SSH
    forwards (here) that are still there."""
    return sorted(Path("/tmp").glob("virtdeck-nbd-*")) + sorted(
        Path(tempfile.gettempdir()).glob("virtdeck-ssh-*")
    )


def test_a_shut_off_guest_is_backed_up_from_its_volume_file_byte_for_byte(
    client: TestClient, tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="64M") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 4M").returncode == 0
        assert qemu_io(guest.disk, "write -P 0x6b 48M 1M").returncode == 0
        add_host(client, "local", SYSTEM_URI)

        backup = back_up(client, guest.uuid)
        entry, image = disk_file(client, backup)
        manifest = json.loads((image.parent / "manifest.json").read_text())

        assert entry["copied_by"] == "file"
        assert image.read_bytes() == guest.disk.read_bytes()
        assert image.stat().st_blocks <= guest.disk.stat().st_blocks + 8  # holes stayed holes
        assert manifest["digest"] == backup_hash(client.app.state.settings).algorithm
        assert [f["copied_by"] for f in manifest["files"] if f["kind"] == "disk"] == ["file"]
        verified = client.post(f"/api/v1/backups/{backup['id']}/verify")
        assert verified.status_code == 200 and verified.json()["status"] == "succeeded"


def test_a_running_guest_is_backed_up_through_an_nbd_export_with_no_scratch_volume(
    client: TestClient, tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="64M", fmt="raw") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 4M", "raw").returncode == 0
        assert qemu_io(guest.disk, "write -P 0x6b 48M 1M", "raw").returncode == 0
        add_host(client, "local", SYSTEM_URI)
        virsh("start", guest.uuid)
        try:
            backup = back_up(client, guest.uuid)
            job_info = virsh("domjobinfo", guest.uuid)
        finally:
            virsh("destroy", guest.uuid)
        entry, _ = disk_file(client, backup)
        image, _ = disk_as_image(client, backup, tmp_path)

        assert (backup["guest_state"], entry["copied_by"], entry["format"]) == (
            "running",
            "nbd",
            "extents",
        )
        assert job_info.split() == ["Job", "type:", "None"], job_info
        assert sorted(p.name for p in (IMAGES / pool).iterdir()) == [guest.disk.name]
        assert same_image(image, guest.disk, "raw", "raw")
        # Only the written extents were copied: the 64 MiB disk holds 5 MiB of data.
        assert entry["size"] == 5 << 20
        manifest = json.loads((disk_file(client, backup)[1].parent / "manifest.json").read_text())
        extents = [f["extents"] for f in manifest["files"] if f["kind"] == "disk"]
        assert extents == [[[0, 4 << 20], [48 << 20, 1 << 20]]]
        copy = f"{guest.name}-copy"
        try:
            job = restore(client, backup["id"], mode="new", name=copy)
            assert job["status"] == "succeeded", job
            new_disk = Path(job["result"]["disks"]["vda"])
            assert same_image(guest.disk, new_disk, "raw")
        finally:
            virsh("undefine", copy, check=False)


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local", "qemu+ssh"])
def test_a_cancelled_running_backup_ends_its_nbd_job_and_leaves_no_files(
    make_client, tmp_path: Path, request: pytest.FixtureRequest, over_ssh: bool
) -> None:
    client = make_client(backup_bandwidth_mib=1)
    root = Path(client.app.state.settings.backup_dir)
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="32M") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x22 0 24M").returncode == 0
        uri = request.getfixturevalue("ssh").uri() if over_ssh else SYSTEM_URI
        add_host(client, "over-ssh" if over_ssh else "local", uri)
        idle_pool.close_all()  # what earlier tests left for a next job
        before = leftovers()
        virsh("start", guest.uuid)
        try:
            started = start_backup(client, guest.uuid)
            job_id = started["job"]["id"]
            wait_until_copying(client, job_id)
            copying = client.get(f"/api/v1/jobs/{job_id}").json()["message"]
            assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 202)
            job = finished_job(client, job_id, timeout=BACKUP_TIMEOUT)
            until(lambda: no_backup_job(guest.uuid), timeout=10, what="the libvirt job lingers")
            state = virsh("domstate", guest.uuid).strip()
        finally:
            virsh("destroy", guest.uuid, check=False)
        backup = client.get(f"/api/v1/backups/{started['backup']['id']}").json()

        # Progress counts what the disk holds (24 MiB written), not its 32 MiB capacity.
        assert copying.startswith("copying vda: ") and " of 24 MiB, " in copying, copying
        assert job["status"] == "cancelled", job
        assert backup["status"] == "cancelled"
        assert backup_files_left(root) == []
        assert leftovers() == before
        assert state == "running"
        assert holds(guest.disk, "0x22", "24M")


def test_a_running_guest_on_a_qemu_ssh_host_is_read_from_its_nbd_export_through_ssh(
    client: TestClient, tmp_path: Path, ssh: SshHost
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="64M") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x5a 0 1M").returncode == 0
        assert qemu_io(guest.disk, "write -P 0x6b 40M 2M").returncode == 0
        add_host(client, "over-ssh", ssh.uri())
        idle_pool.close_all()  # what earlier tests left for a next job
        before = leftovers()

        offline = back_up(client, guest.uuid)
        virsh("start", guest.uuid)
        try:
            online = back_up(client, guest.uuid)
            logins = ssh.log.read_text().count("Accepted publickey")
            again = back_up(client, guest.uuid)
            logged_in_again = ssh.log.read_text().count("Accepted publickey") - logins
            job_info = virsh("domjobinfo", guest.uuid)
        finally:
            virsh("destroy", guest.uuid)

        copied_by = [disk_file(client, backup)[0]["copied_by"] for backup in (offline, online)]
        assert copied_by == ["stream", "nbd"]
        for backup in (offline, online):
            image, fmt = disk_as_image(client, backup, tmp_path)
            assert same_image(image, guest.disk, fmt), backup["guest_state"]
        assert job_info.split() == ["Job", "type:", "None"], job_info
        assert sorted(p.name for p in (IMAGES / pool).iterdir()) == [guest.disk.name]
        # The next backup of the host used the libvirt connection and the SSH session (with its
        # directory on the host) the previous one left: no new login. The worker's stop closes
        # them, and removes the directory.
        assert again["kind"] == "incremental" and logged_in_again == 0
        idle_pool.close_all()
        assert leftovers() == before
