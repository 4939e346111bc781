"""Disk files made of extents, read from a pull-mode NBD export: a running guest's full backup
(format "extents": every extent that may hold data) and an incremental one (format "delta": the
extents its dirty bitmap marks), their bytes back to back in ascending offset order, the extents
listed in the entry; and a disk as it was at a point of a chain, rebuilt from the chain's first
file (an image or extents) with every delta up to that point applied.

These files and their recorded extents are untrusted (anyone who can write the backup directory
can change them): extents are checked against the capacity and the file's size before a byte is
written, and every file is hashed again as it is read for the rebuild."""

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from app.errors import Conflict, VirtdeckError
from app.services.backups.files import PART, private_file
from app.services.backups.images import check_image
from app.services.backups.local_copy import convert
from app.services.backups.nbd_client import MAX_READ, NbdClient
from app.services.backups.streams import ZEROS, HashingWriter, Throttle, checked_segments

EXTENTS = "extents"  # a full backup's disk file: the disk's extents that may hold data
DELTA = "delta"  # an incremental backup's disk file: the extents changed since its parent
ALLOCATION = "base:allocation"  # the meta context of what is allocated, in every NBD export
DIRTY = 1 << 0  # a dirty bitmap context's flag for a changed extent
ZERO = 1 << 1  # base:allocation's flag for an extent that reads as zeros
OUT_FORMATS = ("raw", "qcow2")


def copy_extents(
    socket_path: str,
    export_name: str,
    context: str | None,
    path: Path,
    *,
    capacity: int,
    on_bytes: Callable[[int], None],
    algorithm: str,
    on_plan: Callable[[int], None] = lambda _n: None,
) -> tuple[list[list[int]], int, str]:
    """The export's extents into path (as path.part until complete), their bytes back to back:
    with a dirty bitmap context, those it marks; with None, all but those that read as zeros.
    (extents as [offset, length], size, digest by algorithm). on_plan(count) hears how many
    bytes will be copied once the extents are known; on_bytes(count) of each byte copied, and
    may raise to stop the copy."""
    with NbdClient(socket_path, export_name, context=context or ALLOCATION) as client:
        if client.size != capacity:
            raise VirtdeckError(
                f"the export {export_name} holds {client.size} bytes, not the disk's {capacity}"
            )
        wanted = [
            (extent.offset, extent.length)
            for extent in client.block_status(0, capacity)
            if (extent.flags & DIRTY if context else not extent.flags & ZERO)
        ]
        on_plan(sum(length for _, length in wanted))
        writer = HashingWriter(path, on_bytes=on_bytes, algorithm=algorithm, buffer_size=MAX_READ)
        try:
            for buffer, length in client.read_ranges(wanted, lambda wait: writer.buffer(wait=wait)):
                writer.write_buffer(buffer, length)
        except BaseException:
            writer.abort()
            raise
    size, digest = writer.finish()
    return [[offset, length] for offset, length in wanted], size, digest


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
    pieces: Sequence[tuple[Path, dict[str, Any]]],
    out: Path,
    *,
    capacity: int,
    out_fmt: str,
    on_bytes: Callable[[int], None] = lambda _n: None,
) -> None:
    """The disk as it was at the last of pieces, (file, its manifest entry) oldest first: the
    first a full backup's image (qcow2 or raw) or extents, the rest deltas. Built in a sparse raw
    file next to out, then out in out_fmt. Every piece's extents are checked before anything is
    written, and each file is hashed as it is read (an image as it is copied privately before
    qemu-img opens it): a file changed since it was verified fails the rebuild. Temporary files
    go on any failure. on_bytes hears of each byte read and written; it may raise to stop."""
    if out_fmt not in OUT_FORMATS:
        raise VirtdeckError(f"cannot make a {out_fmt} image (one of {', '.join(OUT_FORMATS)})")
    if not pieces:
        raise VirtdeckError("nothing to rebuild the disk from")
    (first, head), rest = pieces[0], pieces[1:]
    if any(entry.get("format") != DELTA for _, entry in rest):
        raise Conflict(f"only deltas can follow the first file of a chain ({first.name})")
    image = None if head.get("format") == EXTENTS else (first, head)
    applied = [
        (path, entry, checked_extents(entry.get("extents"), capacity=capacity,
                                      size=entry["size"], name=path.name))
        for path, entry in (pieces if image is None else rest)
    ]  # fmt: skip
    raw = out.with_name(out.name + ".raw" + PART)
    copy = out.with_name(out.name + ".image" + PART)
    part = out.with_name(out.name + PART)
    try:
        private_file(raw).close()  # qemu-img keeps the modes of a file it overwrites
        if image is None:
            os.truncate(raw, capacity)
        else:
            _convert_image(image, copy, raw, capacity=capacity, on_bytes=on_bytes)
        with open(raw, "r+b") as target:
            for path, entry, extents in applied:
                _apply(path, entry, extents, target.fileno(), on_bytes)
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
        for temporary in (raw, copy, part):
            temporary.unlink(missing_ok=True)


def _convert_image(
    image: tuple[Path, dict[str, Any]],
    copy: Path,
    raw: Path,
    *,
    capacity: int,
    on_bytes: Callable[[int], None],
) -> None:
    """A full backup's image into the sparse raw file, from a private copy hashed as it was
    made (and checked by qemu-img), so that what is converted is what was verified."""
    path, entry = image
    fmt = entry["format"]
    if fmt not in OUT_FORMATS:  # the record's word, yet never a format qemu-img may not expect
        raise Conflict(f"{path.name} is recorded as {fmt!r}, not one of {', '.join(OUT_FORMATS)}")
    with private_file(copy) as target:
        for segment in checked_segments(path, entry, on_bytes=on_bytes, throttle=Throttle(0)):
            if isinstance(segment, int):
                target.seek(segment, os.SEEK_CUR)
            else:
                target.write(segment)
        target.truncate()
    check_image(copy, fmt)
    convert(
        ["qemu-img", "convert", "-p", "-f", fmt, "-O", "raw", str(copy), str(raw)],
        path.name,
        capacity=capacity,
        on_bytes=on_bytes,
    )
    if raw.stat().st_size != capacity:
        raise Conflict(f"{path.name} holds {raw.stat().st_size} bytes, not {capacity}")


def _apply(
    path: Path,
    entry: dict[str, Any],
    extents: list[tuple[int, int]],
    fd: int,
    on_bytes: Callable[[int], None],
) -> None:
    """Write the file's bytes, read in order and hashed as they go by, at its extents' offsets
    in fd (a hole in the file is zeros written there)."""
    spans = iter(extents)
    offset, left = 0, 0
    for view in _views(
        checked_segments(path, entry, on_bytes=lambda _n: None, throttle=Throttle(0))
    ):
        while view:
            if left == 0:
                offset, left = next(spans, (0, 0))
                if left == 0:
                    raise Conflict(f"{path.name} is longer than its extents")
            step = min(left, len(view))
            written = os.pwrite(fd, view[:step], offset)
            offset, left, view = offset + written, left - written, view[written:]
            on_bytes(written)
    if left or next(spans, None) is not None:
        raise Conflict(f"{path.name} is shorter than its extents")


def _views(segments: Iterator[bytes | int]) -> Iterator[memoryview]:
    """The segments' bytes, a hole as chunks of zeros."""
    for segment in segments:
        if isinstance(segment, int):
            while segment > 0:
                step = min(segment, len(ZEROS))
                yield memoryview(ZEROS)[:step]
                segment -= step
        else:
            yield memoryview(segment)
