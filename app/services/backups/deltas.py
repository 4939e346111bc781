"""Incremental backup files: a disk's dirty extents, read from a pull-mode NBD export, stored as
one delta file (their bytes back to back, in ascending offset order); and a disk as it was at a
point of a chain, rebuilt from its full backup's image with every delta up to that point applied.

Delta files and their recorded extents are untrusted (anyone who can write the backup directory
can change them): extents are checked against the capacity and the file's size before a byte is
written."""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.errors import Conflict, VirtdeckError
from app.services.backups.files import PART, READ_CHUNK, private_file
from app.services.backups.images import check_image
from app.services.backups.local_copy import convert
from app.services.backups.nbd_client import NbdClient
from app.services.backups.streams import HashingWriter

DIRTY = 1 << 0  # a dirty bitmap context's flag for a changed extent
OUT_FORMATS = ("raw", "qcow2")


def copy_delta(
    socket_path: str,
    export_name: str,
    context: str,
    path: Path,
    *,
    capacity: int,
    on_bytes: Callable[[int], None],
) -> tuple[list[list[int]], int, str]:
    """The extents the export's dirty bitmap context marks, their bytes written back to back
    into path (as path.part until complete); (extents as [offset, length], size, sha256).
    on_bytes(count) hears of each changed byte copied and may raise to stop the copy."""
    with NbdClient(socket_path, export_name, context=context) as client:
        if client.size != capacity:
            raise VirtdeckError(
                f"the export {export_name} holds {client.size} bytes, not the disk's {capacity}"
            )
        dirty = [
            (extent.offset, extent.length)
            for extent in client.block_status(0, capacity)
            if extent.flags & DIRTY
        ]
        writer = HashingWriter(path, on_bytes=on_bytes)
        try:
            for data in client.read_ranges(dirty):
                writer.write(data)
        except BaseException:
            writer.abort()
            raise
    size, digest = writer.finish()
    return [[offset, length] for offset, length in dirty], size, digest


def checked_extents(extents: Any, *, capacity: int, size: int, name: str) -> list[tuple[int, int]]:
    """A delta's recorded extents, if they are [offset, length] pairs in ascending order, not
    overlapping, within the capacity, and their lengths add up to the file's size; else 409."""
    if not isinstance(extents, list):
        raise Conflict(f"{name}: its extents are not a list; refusing to restore it")
    checked, end = [], 0
    for extent in extents:
        if (
            not isinstance(extent, list)
            or len(extent) != 2
            or not all(type(n) is int for n in extent)
        ):
            raise Conflict(f"{name}: extent {extent!r} is not [offset, length]")
        offset, length = extent
        if offset < end or length <= 0 or offset + length > capacity:
            raise Conflict(
                f"{name}: extent [{offset}, {length}] overlaps another, is out of order or "
                f"lies beyond the disk's {capacity} bytes"
            )
        checked.append((offset, length))
        end = offset + length
    if sum(length for _, length in checked) != size:
        raise Conflict(f"{name}: its extents do not add up to its {size} bytes")
    return checked


def materialize(
    base: tuple[Path, str],
    deltas: Sequence[tuple[Path, Any]],
    out: Path,
    *,
    capacity: int,
    out_fmt: str,
    on_bytes: Callable[[int], None] = lambda _n: None,
) -> None:
    """The disk as it was at the last delta: base (image, format) as a sparse raw file next to
    out, each delta's (file, extents) written at their offsets in order, then out in out_fmt.
    Every delta's extents are checked before anything is written; temporary files go on any
    failure. on_bytes hears of the base's capacity as it is converted, each delta byte applied
    and, for qcow2, the capacity again; it may raise to stop."""
    if out_fmt not in OUT_FORMATS:
        raise VirtdeckError(f"cannot make a {out_fmt} image (one of {', '.join(OUT_FORMATS)})")
    applied = [
        (path, checked_extents(extents, capacity=capacity, size=_size(path), name=path.name))
        for path, extents in deltas
    ]
    image, fmt = base
    check_image(image, fmt)
    raw = out.with_name(out.name + ".raw" + PART)
    part = out.with_name(out.name + PART)
    try:
        private_file(raw).close()  # qemu-img keeps the modes of a file it overwrites
        convert(
            ["qemu-img", "convert", "-p", "-f", fmt, "-O", "raw", str(image), str(raw)],
            image.name,
            capacity=capacity,
            on_bytes=on_bytes,
        )
        if raw.stat().st_size != capacity:
            raise Conflict(f"{image.name} holds {raw.stat().st_size} bytes, not {capacity}")
        with open(raw, "r+b") as target:
            for path, extents in applied:
                _apply(path, extents, target.fileno(), on_bytes)
        if out_fmt == "raw":
            os.replace(raw, out)
            return
        private_file(part).close()
        convert(
            ["qemu-img", "convert", "-p", "-f", "raw", "-O", "qcow2", str(raw), str(part)],
            out.name,
            capacity=capacity,
            on_bytes=on_bytes,
        )
        os.replace(part, out)
    finally:
        raw.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise Conflict(f"{path.name} cannot be read: {exc.strerror}") from exc


def _apply(
    path: Path, extents: list[tuple[int, int]], fd: int, on_bytes: Callable[[int], None]
) -> None:
    """Write the delta file's bytes, read in order, at its extents' offsets in fd."""
    with open(path, "rb") as source:
        for offset, length in extents:
            end = offset + length
            while offset < end:
                chunk = source.read(min(READ_CHUNK, end - offset))
                if not chunk:
                    raise Conflict(f"{path.name} is shorter than its extents")
                view = memoryview(chunk)
                while view:
                    written = os.pwrite(fd, view, offset)
                    offset += written
                    view = view[written:]
                on_bytes(len(chunk))
