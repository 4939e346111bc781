"""Extents files with real QEMU (no libvirt): a delta copied from a qemu-nbd export of a disk with
a persistent dirty bitmap holds exactly the extents written since the bitmap began, fast; a full
copy holds every extent that may hold data; the disk rebuilt from the image before the writes (or
the full copy) plus the delta equals the disk; extents that do not fit their file or the disk are
refused before anything is written, and a file changed after it was verified fails the rebuild."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.errors import Conflict, VirtdeckError
from app.services.backups.deltas import copy_extents, materialize
from app.services.backups.files import sha256_of
from app.services.backups.nbd_client import NbdClient

MIB = 1 << 20
BITMAP = "b0"
CONTEXT = f"qemu:dirty-bitmap:{BITMAP}"


def qemu_io(image: Path, *commands: str) -> None:
    """Run qemu-io commands on a qcow2 image."""
    args = [arg for command in commands for arg in ("-c", command)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(image)], check=True, capture_output=True)


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    """Run qemu-img."""
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)


def same_image(first: Path, first_fmt: str, second: Path) -> bool:
    """Whether qemu-img compare finds the contents of first (as first_fmt) and the qcow2 second
    identical."""
    return (
        qemu_img(
            "compare", "-q", "-f", first_fmt, "-F", "qcow2", str(first), str(second)
        ).returncode
        == 0
    )


def entry(path: Path, fmt: str, extents: object = None) -> dict[str, object]:
    """A manifest entry for the file as it is now."""
    return {
        "name": path.name,
        "format": fmt,
        "size": path.stat().st_size,
        "sha256": sha256_of(path),
        "extents": extents,
    }


class Disk:
    """A qcow2 disk with some data, a copy taken before the bitmap began, and the bitmap."""

    def __init__(self, directory: Path, size: str) -> None:
        self.image = directory / "disk.qcow2"
        self.before = directory / "before.qcow2"
        self.socket = directory / "nbd.sock"
        assert qemu_img("create", "-q", "-f", "qcow2", str(self.image), size).returncode == 0
        qemu_io(self.image, "write -P 0x11 0 4M")
        self.before.write_bytes(self.image.read_bytes())
        assert qemu_img("bitmap", "--add", "--enable", str(self.image), BITMAP).returncode == 0
        info = qemu_img("info", "--output=json", "-f", "qcow2", str(self.image)).stdout
        self.capacity = json.loads(info)["virtual-size"]

    def copy(
        self,
        delta: Path,
        *,
        capacity: int | None = None,
        on_bytes: Callable[[int], None] = lambda _n: None,
        context: str | None = CONTEXT,
    ) -> tuple[list[list[int]], int, str]:
        """copy_extents of the served disk's bitmap (or, with context None, of everything that
        may hold data) into delta."""
        return copy_extents(
            str(self.socket),
            "disk",
            context,
            delta,
            capacity=capacity or self.capacity,
            on_bytes=on_bytes,
            algorithm="sha256",
        )

    def serve(self) -> subprocess.Popen:
        """qemu-nbd serving the disk read-only with the bitmap's context, until killed."""
        server = subprocess.Popen(
            ["qemu-nbd", "-f", "qcow2", "-r", "--persistent", "-x", "disk", "-B", BITMAP,
             f"--socket={self.socket}", str(self.image)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert server.poll() is None and time.monotonic() < deadline, "qemu-nbd did not start"
            time.sleep(0.02)
        return server


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Disk]:
    """A Disk of a size with writes (qemu-io commands) made after the bitmap began (the test's
    parameter; 64M and none by default), served by qemu-nbd for the test."""
    size, writes = getattr(request, "param", ("64M", ()))
    disk = Disk(tmp_path, size)
    if writes:
        qemu_io(disk.image, *writes)
    server = disk.serve()
    try:
        yield disk
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


WRITES = ("write -P 0x5a 1M 64k", "write -P 0x33 10M 3M", "write -P 0x44 63M 1M")
SCATTERED = tuple(f"write -P 0x{i % 250 + 1:02x} {i * 2 * MIB} 64k" for i in range(1024))


@pytest.mark.parametrize("served", [("64M", WRITES)], indirect=True)
def test_a_delta_holds_exactly_the_written_extents_and_rebuilds_the_disk(
    served: Disk, tmp_path: Path
) -> None:
    delta = tmp_path / "disk-vda.delta"
    seen: list[int] = []

    extents, size, digest = served.copy(delta, on_bytes=seen.append)

    assert extents == [[1 * MIB, 64 << 10], [10 * MIB, 3 * MIB], [63 * MIB, 1 * MIB]]
    assert size == delta.stat().st_size == sum(seen) == (64 << 10) + 4 * MIB
    assert digest == sha256_of(delta)
    assert delta.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.part"))
    data = delta.read_bytes()
    assert data[: 64 << 10] == b"\x5a" * (64 << 10)
    assert data[64 << 10 : (64 << 10) + 3 * MIB] == b"\x33" * (3 * MIB)
    assert data[-MIB:] == b"\x44" * MIB

    for fmt in ("qcow2", "raw"):
        out = tmp_path / f"rebuilt.{fmt}"
        materialize(
            [
                (served.before, entry(served.before, "qcow2")),
                (delta, entry(delta, "delta", extents)),
            ],
            out,
            capacity=served.capacity,
            out_fmt=fmt,
        )
        assert same_image(out, fmt, served.image)
        assert out.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if "rebuilt" in p.name) == [
        "rebuilt.qcow2",
        "rebuilt.raw",
    ]


@pytest.mark.parametrize("served", [("2G", SCATTERED)], indirect=True)
def test_64_mib_changed_on_a_2_gib_disk_are_copied_in_well_under_a_second(
    served: Disk, tmp_path: Path
) -> None:
    delta = tmp_path / "disk-vda.delta"
    started = time.monotonic()

    extents, size, _ = served.copy(delta)

    elapsed = time.monotonic() - started
    assert len(extents) == 1024 and size == 64 * MIB
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_a_context_the_export_lacks_is_refused(served: Disk) -> None:
    with pytest.raises(VirtdeckError, match="no meta context qemu:dirty-bitmap:gone"):
        NbdClient(str(served.socket), "disk", context="qemu:dirty-bitmap:gone")
    with pytest.raises(VirtdeckError, match="NBD_OPT_SET_META_CONTEXT: export 'other' not present"):
        NbdClient(str(served.socket), "other", context=CONTEXT)


def test_nothing_changed_gives_an_empty_delta_and_a_resized_disk_no_file(
    served: Disk, tmp_path: Path
) -> None:
    delta = tmp_path / "empty.delta"
    extents, size, _ = served.copy(delta)
    assert (extents, size, delta.read_bytes()) == ([], 0, b"")

    with pytest.raises(VirtdeckError, match="holds"):
        served.copy(tmp_path / "x.delta", capacity=MIB)
    assert not (tmp_path / "x.delta").exists()


@pytest.mark.parametrize(
    ("extents", "size", "says"),
    [
        ([[0, MIB], [64 * MIB, 4096]], MIB + 4096, "beyond the disk"),
        ([[0, MIB], [MIB - 4096, 8192]], MIB + 8192, "overlaps"),
        ([[2 * MIB, MIB], [0, MIB]], 2 * MIB, "out of order"),
        ([[0, MIB]], MIB + 1, "do not add up"),
        ([[0, 0]], 0, "overlaps"),
        ([[0, -1]], 0, "overlaps"),
        ([["0", MIB]], MIB, "is not \\[offset, length\\]"),
        ({"0": MIB}, MIB, "not a list"),
    ],
)
def test_extents_that_do_not_fit_are_refused_before_anything_is_written(
    tmp_path: Path, extents: object, size: int, says: str
) -> None:
    base = tmp_path / "base.qcow2"
    assert qemu_img("create", "-q", "-f", "qcow2", str(base), "64M").returncode == 0
    delta = tmp_path / "bad.delta"
    delta.write_bytes(b"\x77" * size)
    out = tmp_path / "out.qcow2"

    with pytest.raises(Conflict, match=says):
        materialize(
            [(base, entry(base, "qcow2")), (delta, {**entry(delta, "delta"), "extents": extents})],
            out,
            capacity=64 * MIB,
            out_fmt="qcow2",
        )

    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.delta", "base.qcow2"]


def test_a_base_that_names_a_backing_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"s" * MIB)
    base = tmp_path / "base.qcow2"
    made = qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(secret), str(base))
    assert made.returncode == 0, made.stderr

    with pytest.raises(Conflict, match="backing"):
        materialize(
            [(base, entry(base, "qcow2"))], tmp_path / "out.qcow2", capacity=MIB, out_fmt="qcow2"
        )

    assert not (tmp_path / "out.qcow2").exists()


@pytest.mark.parametrize("served", [("64M", WRITES)], indirect=True)
def test_a_copy_stopped_by_its_progress_leaves_no_file(served: Disk, tmp_path: Path) -> None:
    def cancel(_count: int) -> None:
        raise VirtdeckError("cancelled")

    with pytest.raises(VirtdeckError, match="cancelled"):
        served.copy(tmp_path / "x.delta", on_bytes=cancel)

    assert not [p for p in tmp_path.iterdir() if p.name.startswith("x.delta")]


@pytest.mark.parametrize("served", [("64M", WRITES)], indirect=True)
def test_a_full_copy_holds_the_data_extents_and_rebuilds_the_disk_with_a_delta(
    served: Disk, tmp_path: Path
) -> None:
    full = tmp_path / "disk-vda.extents"
    extents, size, digest = served.copy(full, context=None)
    delta = tmp_path / "disk-vda.delta"
    changed, _, _ = served.copy(delta)

    # qcow2 clusters are 64 KiB: the first 4 MiB and the later writes, nothing of the holes.
    assert extents == [[0, 4 * MIB], [10 * MIB, 3 * MIB], [63 * MIB, MIB]]
    assert size == full.stat().st_size == 8 * MIB and digest == sha256_of(full)
    alone = tmp_path / "alone.qcow2"
    materialize(
        [(full, entry(full, "extents", extents))], alone, capacity=served.capacity, out_fmt="qcow2"
    )
    assert same_image(alone, "qcow2", served.image)
    both = tmp_path / "both.raw"
    materialize(
        [(full, entry(full, "extents", extents)), (delta, entry(delta, "delta", changed))],
        both,
        capacity=served.capacity,
        out_fmt="raw",
    )
    assert same_image(both, "raw", served.image)


@pytest.mark.parametrize("served", [("64M", WRITES)], indirect=True)
@pytest.mark.parametrize("changed", ["base", "delta"])
def test_a_file_changed_after_it_was_verified_fails_the_rebuild(
    served: Disk, tmp_path: Path, changed: str
) -> None:
    delta = tmp_path / "disk-vda.delta"
    extents, _, _ = served.copy(delta)
    pieces = [
        (served.before, entry(served.before, "qcow2")),
        (delta, entry(delta, "delta", extents)),
    ]
    swapped = served.before if changed == "base" else delta
    with open(swapped, "r+b") as handle:  # as if changed between the check and the read
        handle.seek(MIB)
        handle.write(b"\xee" * 4096)
    out = tmp_path / "out.qcow2"

    with pytest.raises(Conflict, match="changed after it was verified"):
        materialize(pieces, out, capacity=served.capacity, out_fmt="qcow2")

    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out.qcow2")]


def test_a_base_recorded_in_another_format_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.vmdk"
    assert qemu_img("create", "-q", "-f", "vmdk", str(base), "1M").returncode == 0

    with pytest.raises(Conflict, match="recorded as 'vmdk', not one of raw, qcow2"):
        materialize(
            [(base, entry(base, "vmdk"))], tmp_path / "out.qcow2", capacity=MIB, out_fmt="qcow2"
        )

    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vmdk"]
