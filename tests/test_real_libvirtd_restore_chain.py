"""Restoring a point of an incremental chain on the real libvirtd: a full backup taken by the
service, then two incrementals whose deltas are read (by the service's own copy_extents) from a
qemu-nbd export of the disk's dirty bitmap; each point restored as a new guest, and in place, is
the disk as it was then; a flipped byte in an ancestor's delta stops the restore, marks that
backup corrupt, and after that the restore is refused up front."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.models import Backup
from app.services.backups.deltas import copy_extents
from app.services.backups.digests import ALGORITHMS
from app.services.backups.files import make_private_dirs, write_manifest
from app.services.backups.streams import write_bytes
from tests.backups import add_backup, back_up, restore
from tests.conftest import add_host
from tests.libvirtd import IMAGES, SYSTEM_URI, qemu_io, throwaway_guest, virsh
from tests.polling import finished_job
from tests.storage import throwaway_pool

pytestmark = pytest.mark.libvirtd
MIB = 1 << 20


def same_image(first: Path, second: Path) -> bool:
    """Whether qemu-img compare finds the two qcow2 images' contents identical."""
    done = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", str(first), str(second)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode == 0


def unhashed(entry: dict[str, Any]) -> dict[str, Any]:
    """The parent's file entry without its digest (whichever algorithm the service used)."""
    return {k: v for k, v in entry.items() if k not in ALGORITHMS}


def bitmap(disk: Path, *args: str) -> None:
    """qemu-img bitmap on the guest's (shut-off) disk."""
    subprocess.run(["qemu-img", "bitmap", *args, "-f", "qcow2", str(disk), "b0"], check=True)


def incremental(
    client: TestClient,
    sessions: sessionmaker[Session],
    host: dict,
    parent_id: int,
    disk: Path,
    work: Path,
) -> int:
    """An incremental backup record of the disk's changes since b0 began, laid out as the
    service lays one out (delta, domain.xml, manifest), on top of parent_id; its id."""
    with sessions() as session:
        row = session.get(Backup, parent_id)
        parent = {"path": row.path, "files": row.files, "guest_uuid": row.guest_uuid}
    root = Path(client.app.state.settings.backup_dir)
    relative = f"{parent['path']}-inc-{time.monotonic_ns()}"
    directory = make_private_dirs(root, relative)
    socket = work / "nbd.sock"
    server = subprocess.Popen(
        ["qemu-nbd", "-f", "qcow2", "-r", "--persistent", "-x", "vda", "-B", "b0",
         f"--socket={socket}", str(disk)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not socket.exists():
            assert server.poll() is None
            time.sleep(0.02)
        full_disk = next(f for f in parent["files"] if f["kind"] == "disk")
        extents, size, digest = copy_extents(
            str(socket),
            "vda",
            "qemu:dirty-bitmap:b0",
            directory / "disk-vda.delta",
            capacity=full_disk["capacity"],
            on_bytes=lambda _n: None,
            algorithm="sha256",
        )
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
    xml = next(f for f in parent["files"] if f["kind"] == "domain-xml")
    xml_size, xml_sha = write_bytes(
        directory / xml["name"],
        (root / parent["path"] / xml["name"]).read_bytes(),
        algorithm="sha256",
    )
    files: list[dict[str, Any]] = [
        {**unhashed(xml), "size": xml_size, "sha256": xml_sha},
        {**unhashed(full_disk), "name": "disk-vda.delta", "format": "delta", "extents": extents,
         "size": size, "sha256": digest, "copied_by": "nbd"},
    ]  # fmt: skip
    manifest_sha = write_manifest(directory, {"files": files, "digest": "sha256"})
    return add_backup(
        sessions,
        host,
        guest_uuid=parent["guest_uuid"],
        guest_name=row.guest_name,
        path=relative,
        files=files,
        manifest_sha256=manifest_sha,
        kind="incremental",
        parent_id=parent_id,
        size_bytes=size,
    )


def test_each_point_of_a_chain_restores_the_disk_as_it_was(
    client: TestClient, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size="64M") as guest,
    ):
        assert qemu_io(guest.disk, "write -P 0x11 0 4M").returncode == 0
        host = add_host(client, "local", SYSTEM_URI)
        full = back_up(client, guest.uuid)
        at: dict[str, Path] = {}
        bitmap(guest.disk, "--add", "--enable")
        assert qemu_io(guest.disk, "write -P 0x5a 1M 64k").returncode == 0
        assert qemu_io(guest.disk, "write -P 0x33 20M 3M").returncode == 0
        at["first"] = tmp_path / "first.qcow2"
        shutil.copyfile(guest.disk, at["first"])
        first = incremental(client, sessions, host, full["id"], guest.disk, tmp_path)
        bitmap(guest.disk, "--clear")
        assert qemu_io(guest.disk, "write -P 0x77 1M 8k").returncode == 0
        assert qemu_io(guest.disk, "write -P 0x44 63M 1M").returncode == 0
        at["second"] = tmp_path / "second.qcow2"
        shutil.copyfile(guest.disk, at["second"])
        second = incremental(client, sessions, host, first, guest.disk, tmp_path)
        assert qemu_io(guest.disk, "write -P 0x99 0 8M").returncode == 0  # after the chain
        copies = []
        try:
            for point, backup_id in (("first", first), ("second", second)):
                copies.append(f"{guest.name}-{point}")
                job = restore(client, backup_id, mode="new", name=copies[-1])
                assert job["status"] == "succeeded", job
                assert same_image(Path(job["result"]["disks"]["vda"]), at[point]), point

            job = restore(client, first, mode="in_place")
            assert job["status"] == "succeeded", job
            assert same_image(guest.disk, at["first"])
            root = Path(client.app.state.settings.backup_dir)
            assert not list(root.glob(".virtdeck-restore-*"))  # the rebuilt images are gone

            path = client.get(f"/api/v1/backups/{first}").json()["path"]
            delta = root / path / "disk-vda.delta"
            data = bytearray(delta.read_bytes())
            data[100] ^= 0xFF
            delta.write_bytes(bytes(data))
            started = client.post(
                f"/api/v1/backups/{second}/restore", json={"mode": "new", "name": "never"}
            )
            assert started.status_code == 202, started.text
            job = finished_job(client, started.json()["job"]["id"], timeout=120)
            assert job["status"] == "failed"
            assert f"backup {first}, which this one builds on, is corrupt" in job["error"]
            assert client.get(f"/api/v1/backups/{first}").json()["status"] == "corrupt"
            refused = client.post(
                f"/api/v1/backups/{second}/restore", json={"mode": "new", "name": "never"}
            )
            assert refused.status_code == 409
            assert f"backup {first} is corrupt" in refused.json()["detail"]
            assert "never" not in virsh("list", "--all", "--name").split()
        finally:
            for name in copies:
                virsh("undefine", name, check=False)
