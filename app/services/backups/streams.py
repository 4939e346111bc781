"""Streams between libvirt and the backup directory: a file written under a temporary name while a
second thread hashes it, read back sparsely (and hashed again) for a restore, at a bounded rate
and with progress for the job."""

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.errors import Conflict
from app.services.backups.files import PART, READ_CHUNK, private_file
from app.units import human_bytes

_ZEROS = bytes(READ_CHUNK)


class Throttle:
    """Keeps a copy at or below rate bytes a second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._bytes = 0

    def passed(self, count: int) -> None:
        """count more bytes went by; sleep if that is ahead of the rate."""
        self._bytes += count
        if self._rate > 0:
            ahead = self._bytes / self._rate - (time.monotonic() - self._start)
            if ahead > 0:
                time.sleep(ahead)


class Meter:
    """Bytes done of a total, with the rate and time left, for a job's progress line."""

    def __init__(
        self,
        total: int,
        report: Callable[[float, str], None],
        *,
        start: float = 0.0,
        span: float = 1.0,
    ) -> None:
        self.total = max(total, 1)
        self._start_at, self._span = start, span
        self.done = 0
        self._report = report
        self._start = time.monotonic()

    def add(self, count: int, what: str) -> None:
        """count more bytes are done; report progress (which raises if the job was cancelled)."""
        self.done += count
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0) / rate if rate else 0
        self._report(
            self._start_at + self._span * min(self.done / self.total, 0.99),
            f"{what}: {human_bytes(self.done)} of {human_bytes(self.total)}, "
            f"{human_bytes(rate)}/s, {left:.0f} s left",
        )


def _hash_segment(digest: Any, segment: bytes | int) -> None:
    """Add data, or a hole of that many zero bytes, to digest."""
    if isinstance(segment, int):
        while segment > 0:
            step = min(segment, len(_ZEROS))
            digest.update(memoryview(_ZEROS)[:step])
            segment -= step
    else:
        digest.update(segment)


class HashingWriter:
    """Writes one backup file as <name>.part while another thread computes its sha256 (so the
    hash costs no extra time on two cores); finish() fsyncs and renames it to its name."""

    def __init__(self, path: Path, *, on_bytes: Callable[[int], None]) -> None:
        self.path = path
        self._part = path.with_name(path.name + PART)
        self._file = private_file(self._part)
        self._on_bytes = on_bytes
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | int | None] = queue.Queue(maxsize=16)
        self._hasher = threading.Thread(target=self._digest, name="backup-hash", daemon=True)
        self._hasher.start()
        self.size = 0

    def _digest(self) -> None:
        while (item := self._queue.get()) is not None:
            _hash_segment(self._hash, item)

    def write(self, data: bytes) -> None:
        """Append data."""
        self._file.write(data)
        self._queue.put(data)
        self.size += len(data)
        self._on_bytes(len(data))

    def hole(self, length: int) -> None:
        """Append length zero bytes without writing them (the file stays sparse)."""
        self._file.seek(length, os.SEEK_CUR)
        self._queue.put(length)
        self.size += length

    def finish(self) -> tuple[int, str]:
        """Flush to disk, wait for the hash, rename to the final name; (size, sha256)."""
        self._file.truncate()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._queue.put(None)
        self._hasher.join()
        os.replace(self._part, self.path)
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        """Stop the hasher and remove the partial file."""
        self._file.close()
        while True:  # make room for the stop marker whatever the hasher is doing
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._hasher.join()
        self._part.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> tuple[int, str]:
    """A small file (the domain XML), written and renamed like the images; (size, sha256)."""
    writer = HashingWriter(path, on_bytes=lambda _n: None)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def segments(
    path: Path, *, on_bytes: Callable[[int], None], throttle: Throttle
) -> Iterator[bytes | int]:
    """The file as data chunks and hole lengths (ints), for a sparse upload."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        fd = handle.fileno()
        offset = 0
        while offset < size:
            try:
                data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # no data past offset: the rest is one hole
                data = size
            if data > offset:
                yield data - offset
                offset = data
                continue
            end = os.lseek(fd, offset, os.SEEK_HOLE)
            handle.seek(offset)
            while offset < end:
                chunk = handle.read(min(READ_CHUNK, end - offset))
                if not chunk:  # the file shrank while it was read
                    return
                offset += len(chunk)
                throttle.passed(len(chunk))
                on_bytes(len(chunk))
                yield chunk


def checked_segments(
    path: Path, entry: dict[str, Any], *, on_bytes: Callable[[int], None], throttle: Throttle
) -> Iterator[bytes | int]:
    """segments() of a backup file, hashed as they go by: the bytes sent are the bytes checked.
    If they are not the recorded ones (the file changed since it was verified, e.g. on a shared
    directory), Conflict is raised after the last segment, before the stream can be finished."""
    digest, size = hashlib.sha256(), 0
    for segment in segments(path, on_bytes=on_bytes, throttle=throttle):
        _hash_segment(digest, segment)
        size += segment if isinstance(segment, int) else len(segment)
        yield segment
    if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
        raise Conflict(f"{path.name} changed after it was verified; nothing was restored")
