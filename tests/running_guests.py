"""Running throwaway guests for incremental-backup tests: known data written into a running guest's
disk from the host (HMP qemu-io on the disk's device, so QEMU's dirty bitmaps see it), the image
its disk should equal built offline by applying the same writes to a fresh image, and restores
compared with it by qemu-img."""

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from fastapi.testclient import TestClient

from tests.backups import restore
from tests.libvirtd import IMAGES, ThrowawayGuest, qemu_io, throwaway_guest, virsh
from tests.storage import throwaway_pool

SIZE = "64M"


@dataclass
class Running:
    """A running throwaway guest, its pool, and the image its disk should equal by now."""

    guest: ThrowawayGuest
    pool: str
    expected: Path

    def write(self, command: str) -> None:
        """A qemu-io write into the running guest's disk (through QEMU), and into expected."""
        hmp = f'qemu-io -d {disk_device(self.guest)} "{command}"'
        said = virsh("qemu-monitor-command", self.guest.name, "--hmp", hmp)
        assert not said.strip(), said  # HMP's qemu-io says only what went wrong
        assert qemu_io(self.expected, command).returncode == 0

    def expected_now(self, label: str) -> Path:
        """A copy of the image the disk should equal now."""
        copy = self.expected.with_name(f"expected-{label}.qcow2")
        shutil.copyfile(self.expected, copy)
        return copy


def disk_device(guest: ThrowawayGuest) -> str:
    """The QOM path of the device the guest's disk is attached to (as `info block` lists it):
    qemu-io writes through its block backend, so QEMU's dirty bitmaps see the writes."""
    lines = virsh("qemu-monitor-command", guest.name, "--hmp", "info block").splitlines()
    for line, after in pairwise(lines):
        if str(guest.disk) in line and "Attached to:" in after:
            return after.split(":", 1)[1].strip()
    raise AssertionError(f"no device for {guest.disk} in {lines}")


def checkpoint_names(guest: ThrowawayGuest) -> list[str]:
    """The guest's checkpoints as virsh lists them."""
    return sorted(virsh("checkpoint-list", guest.uuid, "--name").split())


@contextmanager
def running_guest(tmp_path: Path) -> Iterator[Running]:
    """A started throwaway guest with a SIZE qcow2 disk in a throwaway pool; both go after."""
    with (
        throwaway_pool() as pool,
        throwaway_guest(tmp_path, directory=IMAGES / pool, size=SIZE) as guest,
    ):
        expected = tmp_path / "expected.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(expected), SIZE], check=True)
        virsh("start", guest.uuid)
        yield Running(guest=guest, pool=pool, expected=expected)


@contextmanager
def restored_copies() -> Iterator[list[str]]:
    """Names of guests a test restored; undefined afterwards (their disks go with the pool)."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            virsh("undefine", name, "--nvram", check=False)


def restored_equals(client: TestClient, backup: dict, name: str, expected: Path) -> bool:
    """Restore the backup as a new guest called name; whether its disk equals expected."""
    job = restore(client, backup["id"], mode="new", name=name)
    assert job["status"] == "succeeded", job
    disks = ET.fromstring(virsh("dumpxml", name)).findall("devices/disk")
    disk = next(d for d in disks if d.find("target").get("dev") == "vda")
    compared = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", disk.find("driver").get("type"), "-F", "qcow2",
         disk.find("source").get("file"), str(expected)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return compared.returncode == 0
