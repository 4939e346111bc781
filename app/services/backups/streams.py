"""Streams between libvirt and the backup directory: a file written under a temporary name while a
second thread hashes it, read back sparsely (and hashed again) for a restore, at a bounded rate
and with progress for the job."""

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from app.errors import Conflict
from app.services.backups.digests import hasher, recorded
from app.services.backups.files import PART, READ_CHUNK, private_file
from app.units import human_bytes

ZEROS = bytes(READ_CHUNK)  # a chunk of a hole
# Bytes written between two background write-backs of a backup file (see _Flusher).
FLUSH_EVERY = 128 << 20
# Bytes of buffers a writer lends its reader (HashingWriter.buffer), in buffers of the size the
# reader asks for, at least LENT_MIN of them.
LENT_BYTES = 64 << 20
LENT_MIN = 4


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


class _Flusher:
    """fdatasync of a file being written, in a thread, every FLUSH_EVERY bytes: the page cache is
    written back while the copy goes on, so the final fsync finds little left (the kernel would
    only start at its dirty ratio, gigabytes later). Its first error is raised by stop(), since
    the fsync after it would no longer report it."""

    def __init__(self, fd: int) -> None:
        self._fd, self._pending, self._stopping = fd, 0, False
        self._due = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="backup-flush", daemon=True)
        self._thread.start()

    def wrote(self, count: int) -> None:
        """count more bytes were written."""
        self._pending += count
        if self._pending >= FLUSH_EVERY:
            self._pending = 0
            self._due.set()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._error = exc
                return

    def stop(self) -> None:
        """Wait for the thread; raise the error a write-back met."""
        self._stopping = True
        self._due.set()
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Lent:
    """Bytes in a buffer a writer lent (HashingWriter.buffer), handed to both its consumers:
    the buffer is free again once each has released it."""

    __slots__ = ("_buffer", "_free", "_left", "_lock", "data")

    def __init__(
        self, buffer: bytearray, length: int, free: "queue.SimpleQueue[bytearray]"
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
    time), and a third writes it back (_Flusher); finish() fsyncs and renames it to its name.
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
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._unmade = max(LENT_MIN, LENT_BYTES // buffer_size)
        self._part = path.with_name(path.name + PART)
        self._file = private_file(self._part)
        self._on_bytes = on_bytes
        self._hash = hasher(algorithm)
        self._flusher = _Flusher(self._file.fileno())
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
            self._flusher.wrote(len(item))

    def _raise_failed(self) -> None:
        for consumer in (self._writer, self._hasher):
            if consumer.error is not None:
                raise consumer.error

    def write(self, data: bytes) -> None:
        """Append data (which the caller no longer changes)."""
        self._append(data, len(data))

    def buffer(self, *, wait: bool = True) -> bytearray | None:
        """A buffer of buffer_size bytes to read the next bytes into and pass to write_buffer();
        it waits until the consumers free one (wait False: None if none is free)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._unmade > 0:
                self._unmade -= 1
                return bytearray(self.buffer_size)
            if not wait:
                return None
            self._raise_failed()
            return self._free.get()

    def write_buffer(self, buffer: bytearray, length: int) -> None:
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
        self._flusher.stop()
        os.fsync(self._file.fileno())
        self._file.close()
        self._hasher.stop()
        self._raise_failed()  # a hash that failed (the caller's abort() removes the file)
        os.replace(self._part, self.path)
        return self.size, self._hash.hexdigest()

    def abort(self) -> None:
        """Stop the threads and remove the partial file."""
        self._writer.stop()
        with suppress(OSError):  # the copy failed already; a failed write-back says no more
            self._flusher.stop()
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
                throttle.passed(len(chunk))
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
