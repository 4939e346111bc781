"""The backup directory's side of a backup: files written under a temporary name while a second
thread hashes them, read back sparsely for a restore, verified, and checked with qemu-img."""

import hashlib
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from app.errors import Conflict, VirtdeckError
from app.units import human_bytes
from app.virt.connection import one_line
from app.virt.images import read_file_header

PART = ".part"
MANIFEST = "manifest.json"
READ_CHUNK = 4 << 20
# Backups hold whole disks and domain XML with graphics passwords: for the service user alone,
# whatever the umask.
DIR_MODE = 0o700
FILE_MODE = 0o600
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


def private_file(path: Path) -> BinaryIO:
    """A new (or emptied) file open for writing, readable by the service user alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the file may have been there with other modes
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def make_private_dirs(root: Path, relative: str) -> Path:
    """Make root/relative and the directories between them, each for the service user alone."""
    path = root
    for part in Path(relative).parts:
        path = path / part
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        path.chmod(DIR_MODE)
    return path


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """manifest.json, complete or not at all; the sha256 of its bytes."""
    part = directory / (MANIFEST + PART)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with private_file(part) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(part, directory / MANIFEST)
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    """The file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mismatches(
    directory: Path, files: list[dict[str, Any]], *, manifest_sha256: str | None = None
) -> list[str]:
    """The files whose content no longer matches the recorded sha256 (or that are missing),
    manifest.json among them when its digest was recorded."""
    bad = []
    for entry in files:
        path = directory / entry["name"]
        if not path.is_file():
            bad.append(f"{entry['name']} (missing)")
        elif path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
            bad.append(entry["name"])
    if manifest_sha256 is not None:
        manifest = directory / MANIFEST
        if not manifest.is_file():
            bad.append(f"{MANIFEST} (missing)")
        elif sha256_of(manifest) != manifest_sha256:
            bad.append(MANIFEST)
    return bad


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


def read_checked(path: Path, entry: dict[str, Any]) -> bytes | None:
    """A small backup file's bytes, read once (never more than its recorded size), if they are
    the recorded ones; None if they are not or it cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(entry["size"] + 1)
    except OSError:
        return None
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return None
    return data


def check_image(path: Path, expected_format: str) -> None:
    """qemu-img info: the expected format, and no backing or external data file (which a
    tampered image could point at a host file with); 409 naming the file otherwise. A qcow2
    header is read first, so that qemu-img never opens a file the image names."""
    if expected_format == "qcow2" and read_file_header(str(path)).names_other_files:
        raise Conflict(f"{path.name} names a backing or external data file; refusing to restore it")
    try:
        done = subprocess.run(
            ["qemu-img", "info", "--output=json", "-f", expected_format, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VirtdeckError(f"cannot check {path.name} with qemu-img: {exc}") from exc
    if done.returncode != 0:
        # qemu-img may quote what a tampered image says (feature names, file names): bounded.
        raise Conflict(
            one_line(f"{path.name} is not a valid {expected_format} image: {done.stderr}")
        )
    info = json.loads(done.stdout)
    if info.get("format") != expected_format:
        raise Conflict(f"{path.name} is {info.get('format')}, not {expected_format}")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise Conflict(f"{path.name} has a backing file; refusing to restore it")
    if (info.get("format-specific") or {}).get("data", {}).get("data-file"):
        raise Conflict(f"{path.name} has an external data file; refusing to restore it")


def remove_tree(root: Path, relative: str) -> None:
    """Remove a backup's directory (never anything outside the backup directory), and its
    guest's and host's directories when they are left empty."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root not in target.parents:
        raise VirtdeckError(f"refusing to remove {target}: outside the backup directory")
    shutil.rmtree(target, ignore_errors=True)
    for parent in (target.parent, target.parent.parent):
        if parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def read_manifest(directory: Path) -> dict[str, Any]:
    """The backup's manifest.json."""
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise Conflict(f"the backup's manifest.json cannot be read: {exc}") from exc
