"""Streams between libvirt and the backup directory: a file written under a temporary name while a
second thread hashes it, read back sparsely (and hashed again) for a restore, at a bounded rate
and with progress for the job."""

import ctypes
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from app.errors import Conflict
from app.services.backups.digests import hasher, recorded
from app.services.backups.files import PART, READ_CHUNK, private_file
from app.units import human_bytes

ZEROS = bytes(READ_CHUNK)  # a chunk of a hole
# Bytes written between two requests to the kernel to write a backup file back (see
# HashingWriter._write_back).
WRITE_BACK_EVERY = 8 << 20
# Bytes of buffers a writer lends its reader (HashingWriter.buffer), in buffers of the size the
# reader asks for, at least LENT_MIN of them. Anonymous maps, so that a buffer costs only the
# pages a read fills: a zeroed bytearray cost all of them (64 MiB: 31 ms, on an Intel Xeon), which
# was an eighth of an incremental backup whose reads fill 1 MiB of each 8 MiB buffer.
LENT_BYTES = 64 << 20
LENT_MIN = 4
# The longest a throttled copy sleeps before it listens again for a cancel or a stop.
THROTTLE_STEP = 0.25


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the range back, wait for nothing


def _begin_write_back(fd: int, offset: int, length: int) -> None:
    """Start the write-back of a file's range (Linux's sync_file_range; the stdlib has none)."""
    if _LIBC.sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


class Throttle:
    """Keeps a copy at or below rate bytes a second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._bytes = 0

    def passed(self, count: int, listen: Callable[[], None]) -> None:
        """count more bytes went by; sleep if that is ahead of the rate, calling listen every
        THROTTLE_STEP seconds (it raises to end the copy: a chunk at 1 MiB/s is a 4 s sleep,
        longer than a stopping worker waits for its jobs)."""
        self._bytes += count
        if self._rate <= 0:
            return
        while (ahead := self._bytes / self._rate - (time.monotonic() - self._start)) > 0:
            listen()
            time.sleep(min(ahead, THROTTLE_STEP))


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

    def resize(self, change: int) -> None:
        """The total turned out change bytes larger (or smaller: negative)."""
        self.total = max(self.total + change, 1)

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


def _hash_segment(digest: Any, segment: bytes | memoryview | int) -> None:
    """Add data, or a hole of that many zero bytes, to digest."""
    if isinstance(segment, int):
        while segment > 0:
            step = min(segment, len(ZEROS))
            digest.update(memoryview(ZEROS)[:step])
            segment -= step
    else:
        digest.update(segment)


class _Lent:
    """Bytes in a buffer a writer lent (HashingWriter.buffer), handed to both its consumers:
    the buffer is free again once each has released it."""

    __slots__ = ("_buffer", "_free", "_left", "_lock", "data")

    def __init__(
        self, buffer: mmap.mmap, length: int, free: "queue.SimpleQueue[mmap.mmap]"
    ) -> None:
        self.data = memoryview(buffer)[:length]
        self._buffer, self._free = buffer, free
        self._left = 2
        self._lock = threading.Lock()

    def release(self) -> None:
        """One consumer is done with the bytes; the second gives the buffer back."""
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._free.put(self._buffer)


class _Consumer:
    """A thread that handles each item put to it, in order, while the putter goes on; the first
    error handling one raises is kept (error) and the items after it are dropped (a lent one
    still released, so that a reader waiting for a buffer goes on to hear of the error)."""

    _STOP = object()

    def __init__(self, handle: Callable[[Any], None], *, name: str, depth: int) -> None:
        self._handle = handle
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not self._STOP:
            lent = isinstance(item, _Lent)
            if self.error is None:
                try:
                    self._handle(item.data if lent else item)
                except Exception as exc:  # kept, and raised by the writer
                    self.error = exc
            if lent:  # handled or dropped, this consumer is done with it
                item.release()

    def put(self, item: Any) -> None:
        """Hand item over (waits while depth items are waiting)."""
        self._queue.put(item)

    def stop(self) -> None:
        """Wait until every item put so far is handled, and end the thread."""
        while True:  # make room for the stop marker whatever the thread is doing
            try:
                self._queue.put(self._STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()


class HashingWriter:
    """Writes one backup file as <name>.part: one thread writes it and another computes its
    digest while the caller reads the next bytes (on two cores neither costs the copy much
    time), and asks the kernel to write it back as it goes; finish() fsyncs and renames it to its
    name.
    A failed write is raised by the next write() or by finish().

    A reader that can read into a buffer takes one from buffer() and hands it back filled with
    write_buffer(): the same few buffers go round, where a new bytes object for each read made
    malloc hand out fresh memory, page fault by page fault (12-30 % of a local copy's time in
    the worker process, whose malloc keeps two arenas, measured on an AMD EPYC)."""

    def __init__(
        self,
        path: Path,
        *,
        on_bytes: Callable[[int], None],
        algorithm: str,
        buffer_size: int = READ_CHUNK,
    ) -> None:
        self.path = path
        self.buffer_size = buffer_size
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._unmade = max(LENT_MIN, LENT_BYTES // buffer_size)
        self._part = path.with_name(path.name + PART)
        self._file = private_file(self._part)
        self._on_bytes = on_bytes
        self._hash = hasher(algorithm)
        self._written_back = 0  # the bytes of the file the kernel was asked to write back
        self._unsent = 0  # bytes written since
        self._writer = _Consumer(self._store, name="backup-write", depth=8)
        self._hasher = _Consumer(
            lambda item: _hash_segment(self._hash, item), name="backup-hash", depth=16
        )
        self.size = 0

    def _store(self, item: bytes | memoryview | int) -> None:
        """Write data, or skip a hole of that many bytes."""
        if isinstance(item, int):
            self._file.seek(item, os.SEEK_CUR)
        else:
            self._file.write(item)
            self._unsent += len(item)
            if self._unsent >= WRITE_BACK_EVERY:
                self._write_back()

    def _write_back(self) -> None:
        """Have the kernel begin writing back what was written since the last call, without
        waiting for it (sync_file_range WRITE): the final fsync then finds little left (the
        kernel would only begin at its dirty ratio, gigabytes later), and no disk cache flush is
        asked for on the way, as a background fdatasync every 128 MiB did. Errors of the
        write-back are reported by the fsync."""
        self._file.flush()
        end = self._file.tell()
        _begin_write_back(self._file.fileno(), self._written_back, end - self._written_back)
        self._written_back, self._unsent = end, 0

    def _raise_failed(self) -> None:
        for consumer in (self._writer, self._hasher):
            if consumer.error is not None:
                raise consumer.error

    def write(self, data: bytes) -> None:
        """Append data (which the caller no longer changes)."""
        self._append(data, len(data))

    def buffer(self, *, wait: bool = True) -> mmap.mmap | None:
        """A buffer of buffer_size bytes to read the next bytes into and pass to write_buffer();
        it waits until the consumers free one (wait False: None if none is free)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._unmade > 0:
                self._unmade -= 1
                return mmap.mmap(-1, self.buffer_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if not wait:
                return None
            self._raise_failed()
            return self._free.get()

    def write_buffer(self, buffer: mmap.mmap, length: int) -> None:
        """Append the first length bytes of a buffer from buffer(), which the caller no longer
        touches: it is lent out again once written and hashed."""
        self._append(_Lent(buffer, length, self._free), length)

    def _append(self, item: bytes | _Lent, length: int) -> None:
        self._raise_failed()
        self._writer.put(item)
        self._hasher.put(item)
        self.size += length
        # In steps of a chunk: a throttle sleeps, and a cancel is heard, a chunk at a time.
        for done in range(0, length, READ_CHUNK):
            self._on_bytes(min(READ_CHUNK, length - done))

    def hole(self, length: int) -> None:
        """Append length zero bytes without writing them (the file stays sparse)."""
        self._raise_failed()
        self._writer.put(length)
        self._hasher.put(length)
        self.size += length

    def finish(self) -> tuple[int, str]:
        """Flush to disk, wait for the hash, rename to the final name; (size, hex digest)."""
        self._writer.stop()
        self._raise_failed()
        self._file.truncate()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._hasher.stop()
        self._raise_failed()  # a hash that failed (the caller's abort() removes the file)
        os.replace(self._part, self.path)
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        """Stop the threads and remove the partial file."""
        self._writer.stop()
        self._file.close()
        self._hasher.stop()
        self._part.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes, *, algorithm: str) -> tuple[int, str]:
    """A small file (the domain XML), written and renamed like the images; (size, hex digest)."""
    writer = HashingWriter(path, on_bytes=lambda _n: None, algorithm=algorithm)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def runs(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """The first size bytes of the open file fd as (offset, end, whether it holds data): its
    data and its holes, in order."""
    offset = 0
    while offset < size:
        try:
            data = min(os.lseek(fd, offset, os.SEEK_DATA), size)  # (the file may have grown)
        except OSError:  # no data past offset: the rest is one hole
            data = size
        if data > offset:
            yield offset, data, False
            offset = data
            continue
        end = min(os.lseek(fd, offset, os.SEEK_HOLE), size)
        yield offset, end, True
        offset = end


def segments(
    path: Path, *, on_bytes: Callable[[int], None], throttle: Throttle
) -> Iterator[bytes | int]:
    """The file as data chunks and hole lengths (ints), for a sparse upload."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        for offset, end, data in runs(handle.fileno(), size):
            if not data:
                yield end - offset
                continue
            handle.seek(offset)
            while offset < end:
                chunk = handle.read(min(READ_CHUNK, end - offset))
                if not chunk:  # the file shrank while it was read
                    return
                offset += len(chunk)
                throttle.passed(len(chunk), lambda: on_bytes(0))
                on_bytes(len(chunk))
                yield chunk


def checked_segments(
    path: Path, entry: dict[str, Any], *, on_bytes: Callable[[int], None], throttle: Throttle
) -> Iterator[bytes | int]:
    """segments() of a backup file, hashed as they go by: the bytes sent are the bytes checked.
    If they are not the recorded ones (the file changed since it was verified, e.g. on a shared
    directory), Conflict is raised after the last segment, before the stream can be finished."""
    algorithm, expected = recorded(entry)
    digest, size = hasher(algorithm), 0
    for segment in segments(path, on_bytes=on_bytes, throttle=throttle):
        _hash_segment(digest, segment)
        size += segment if isinstance(segment, int) else len(segment)
        yield segment
    if size != entry["size"] or digest.hexdigest() != expected:
        raise Conflict(f"{path.name} changed after it was verified; nothing was restored")
