"""Incremental backups on the real libvirtd: after a full backup of a running guest, the next ones
copy only the blocks written since (libvirt checkpoints); each point of the chain restores to
the disk as it was, on a local host and on a qemu+ssh one (the export read through SSH); a
checkpoint removed behind virtdeck's back, or dropped for a snapshot of the shut-off guest, makes
the next backup full, saying why; a flipped byte in a delta file is caught and nothing is
restored from it; an incremental that fills the backup disk fails leaving nothing, and the next
one still builds on the full; a chain as long as backup_full_every, or a raw disk, gets a full
backup that says why.

Known data is written into the running guest's disk from the host (HMP qemu-io on the disk's
device, so QEMU's dirty bitmaps see it); the expected images are built offline by applying
the same writes to a fresh image."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.backups import BACKUP_TIMEOUT, back_up, start_backup
from tests.conftest import add_host
from tests.libvirtd import IMAGES, SYSTEM_URI, throwaway_guest, virsh
from tests.polling import finished_job
from tests.running_guests import (
    Running,
    checkpoint_names,
    restored_copies,
    restored_equals,
    running_guest,
)
from tests.storage import pool_volumes, throwaway_pool

pytestmark = pytest.mark.libvirtd

KIB = 1 << 10
MIB = 1 << 20
# QEMU's bitmap granularity for a qcow2 disk of 64 KiB clusters: a write marks whole 64 KiB.
GRANULE = 64 * KIB


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with running_guest(tmp_path) as guest:
        yield guest


@pytest.fixture
def copies() -> Iterator[list[str]]:
    """Names of guests a test restored; undefined afterwards."""
    with restored_copies() as names:
        yield names


def delta_entry(backup: dict) -> dict:
    """The backup's delta file entry for vda."""
    return next(f for f in backup["files"] if f["kind"] == "disk" and f["target"] == "vda")


@pytest.mark.parametrize("over_ssh", [False, True], ids=["local", "qemu+ssh"])
def test_two_incrementals_copy_only_what_changed_and_every_point_restores_exactly(
    client: TestClient,
    running: Running,
    copies: list[str],
    request: pytest.FixtureRequest,
    over_ssh: bool,
) -> None:
    uri = request.getfixturevalue("ssh").uri() if over_ssh else SYSTEM_URI
    add_host(client, "over-ssh" if over_ssh else "local", uri)
    running.write("write -P 0x11 0 4M")
    full = back_up(client, running.guest.uuid)
    at_full = running.expected_now("full")

    running.write("write -P 0x22 16M 1M")
    running.write("write -P 0x33 40M 64k")
    first = back_up(client, running.guest.uuid)
    at_first = running.expected_now("first")

    running.write("write -P 0x44 16M 512k")
    running.write("write -P 0x55 60M 1M")
    second = back_up(client, running.guest.uuid)
    at_second = running.expected_now("second")

    assert (full["kind"], full["parent_id"], full["full_reason"]) == ("full", None, None)
    assert (first["kind"], first["parent_id"]) == ("incremental", full["id"])
    assert (second["kind"], second["parent_id"]) == ("incremental", first["id"])
    assert MIB + 64 * KIB <= first["changed_bytes"] <= MIB + 64 * KIB + 2 * GRANULE
    assert 512 * KIB + MIB <= second["changed_bytes"] <= 512 * KIB + MIB + 2 * GRANULE
    assert delta_entry(first)["format"] == "delta"
    assert delta_entry(second)["size"] == second["changed_bytes"]
    assert second["size_bytes"] < full["size_bytes"]
    # The guest keeps one bitmap: the newest backup's checkpoint.
    assert checkpoint_names(running.guest) == [second["checkpoint"]]

    for backup, expected in ((full, at_full), (first, at_first), (second, at_second)):
        name = f"{running.guest.name}-r{backup['id']}"
        copies.append(name)
        assert restored_equals(client, backup, name, expected), backup["kind"]


def test_a_checkpoint_deleted_behind_virtdecks_back_makes_the_next_backup_full_and_says_why(
    client: TestClient, running: Running, copies: list[str]
) -> None:
    add_host(client, "local", SYSTEM_URI)
    running.write("write -P 0x11 0 1M")
    full = back_up(client, running.guest.uuid)
    virsh("checkpoint-delete", running.guest.uuid, full["checkpoint"])
    running.write("write -P 0x22 8M 1M")

    again = back_up(client, running.guest.uuid)

    assert again["kind"] == "full" and again["parent_id"] is None
    assert f"checkpoint {full['checkpoint']} is missing on the host" in again["full_reason"]
    assert checkpoint_names(running.guest) == [again["checkpoint"]]
    name = f"{running.guest.name}-again"
    copies.append(name)
    assert restored_equals(client, again, name, running.expected_now("again"))
    # A guest with checkpoints is still deleted (with their metadata).
    deleted = client.delete(f"/api/v1/guests/{running.guest.uuid}", params={"force": True})
    assert deleted.status_code == 200, deleted.text
    assert running.guest.name not in virsh("list", "--all", "--name").split()


def test_a_flipped_byte_in_a_delta_is_caught_and_nothing_is_restored_from_it(
    client: TestClient, running: Running, copies: list[str]
) -> None:
    add_host(client, "local", SYSTEM_URI)
    running.write("write -P 0x11 0 1M")
    back_up(client, running.guest.uuid)
    running.write("write -P 0x22 8M 1M")
    first = back_up(client, running.guest.uuid)
    running.write("write -P 0x33 24M 1M")
    second = back_up(client, running.guest.uuid)
    delta = Path(client.app.state.settings.backup_dir) / first["path"] / delta_entry(first)["name"]
    data = bytearray(delta.read_bytes())
    data[len(data) // 2] ^= 0xFF
    delta.write_bytes(bytes(data))
    volumes_before = pool_volumes(running.pool)

    verified = client.post(f"/api/v1/backups/{first['id']}/verify")
    refused = {
        b["id"]: client.post(
            f"/api/v1/backups/{b['id']}/restore",
            json={"mode": "new", "name": f"{running.guest.name}-r{b['id']}"},
        )
        for b in (first, second)
    }
    after = back_up(client, running.guest.uuid)

    assert verified.status_code == 200 and verified.json()["status"] == "corrupt"
    for backup_id, answer in refused.items():
        copies.append(f"{running.guest.name}-r{backup_id}")
        assert answer.status_code == 409, answer.text
    assert pool_volumes(running.pool) == volumes_before
    assert virsh("list", "--all", "--name").count(running.guest.name) == 1
    # What builds on a corrupt backup cannot be restored: the next backup is full again.
    assert after["kind"] == "full"
    assert f"backup {first['id']}" in after["full_reason"]


def test_a_running_guest_with_a_raw_disk_gets_full_backups_and_is_told_why(
    client: TestClient, tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="16M", fmt="raw") as guest,
    ):
        add_host(client, "local", SYSTEM_URI)
        virsh("start", guest.uuid)
        backup = back_up(client, guest.uuid)
        left = checkpoint_names(guest)

    assert (backup["kind"], backup["parent_id"]) == ("full", None)
    assert backup["full_reason"] == (
        "disk vda is raw; only qcow2 disks keep the changed-block bitmaps incremental backups need"
    )
    assert left == []


def test_a_chain_as_long_as_backup_full_every_is_followed_by_a_full_backup(
    make_client: Callable[..., TestClient], running: Running
) -> None:
    client = make_client(backup_full_every=2)
    add_host(client, "local", SYSTEM_URI)
    kinds = []
    for pattern in ("0x11", "0x22", "0x33"):
        running.write(f"write -P {pattern} 0 64k")
        backup = back_up(client, running.guest.uuid)
        kinds.append((backup["kind"], backup["full_reason"]))

    assert kinds == [
        ("full", None),
        ("incremental", None),
        ("full", "chain reached 2 backups; a new full begins"),
    ]


def test_a_snapshot_of_the_shut_off_guest_after_a_backup_works_and_the_next_backup_is_full(
    client: TestClient, running: Running, copies: list[str]
) -> None:
    add_host(client, "local", SYSTEM_URI)
    running.write("write -P 0x11 0 1M")
    full = back_up(client, running.guest.uuid)
    virsh("destroy", running.guest.uuid)

    # libvirt 9.0 refuses an internal snapshot of a shut-off guest that has checkpoints.
    taken = client.post(f"/api/v1/guests/{running.guest.uuid}/snapshots", json={"name": "off"})
    virsh("start", running.guest.uuid)
    running.write("write -P 0x22 8M 1M")
    again = back_up(client, running.guest.uuid)

    assert taken.status_code == 201, taken.text
    assert virsh("snapshot-list", running.guest.uuid, "--name").split() == ["off"]
    assert again["kind"] == "full"
    assert f"checkpoint {full['checkpoint']} is missing on the host" in again["full_reason"]
    name = f"{running.guest.name}-after-snapshot"
    copies.append(name)
    assert restored_equals(client, again, name, running.expected_now("after-snapshot"))


def test_an_incremental_that_fills_the_disk_fails_leaving_nothing_and_the_chain_goes_on(
    make_client: Callable[..., TestClient], running: Running, tmp_path: Path, copies: list[str]
) -> None:
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        client = make_client(backup_dir=str(mount))
        add_host(client, "local", SYSTEM_URI)
        running.write("write -P 0x11 0 1M")
        full = back_up(client, running.guest.uuid)
        running.write("write -P 0x22 8M 8M")

        started = start_backup(client, running.guest.uuid)
        job = finished_job(client, started["job"]["id"], timeout=BACKUP_TIMEOUT)
        failed = client.get(f"/api/v1/backups/{started['backup']['id']}").json()
        left = sorted(p.name for p in mount.rglob("*") if p.is_file())
        kept = checkpoint_names(running.guest)
        # Room again: the next backup still builds on the full one, with every change since.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = back_up(client, running.guest.uuid)
        name = f"{running.guest.name}-after-full-disk"
        copies.append(name)
        equal = restored_equals(client, again, name, running.expected_now("after-full-disk"))
    finally:
        # Lazily: the app (still running until the test ends) may hold the backup directory;
        # the mount leaves the tree now and goes once the app lets go of it.
        subprocess.run(["umount", "--lazy", str(mount)], check=True)

    assert job["status"] == "failed" and "No space left on device" in job["error"], job
    assert failed["status"] == "failed"
    assert left == ["disk-vda.extents", "domain.xml", "manifest.json"]  # the full backup's only
    assert kept == [full["checkpoint"]]  # the failed backup's own checkpoint is gone
    assert (again["kind"], again["parent_id"]) == ("incremental", full["id"])
    assert again["changed_bytes"] >= 8 * MIB
    assert equal
