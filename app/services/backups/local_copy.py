"""Backup copies on a local host, with no libvirt stream in between: a shut-off guest's volume
file read as it is stored (holes skipped, hashed while it is written), and a running guest's disk
read by qemu-img from a pull-mode NBD export (only its allocated extents) into a qcow2 file.

The bytes are never interpreted by a probed format: a volume file is copied byte for byte, and an
export is opened as raw (what the guest sees), named in qemu-img's JSON filename.

convert() runs any qemu-img convert with progress and cancel; restoring a point of an incremental
chain (app.services.backups.deltas) uses it too.
"""

import json
import os
import re
import select
import stat
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.errors import VirtdeckError
from app.services.backups.files import PART, private_file, sha256_of
from app.services.backups.streams import HashingWriter, Throttle, segments
from app.virt.failures import one_line
from app.virt.nbd_exports import NbdExport

PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# Seconds between progress reports while qemu-img is quiet: each may stop a cancelled job, and
# they renew the job's lease.
TICK = 1.0


def readable_file(path: str) -> bool:
    """Whether path is a regular file this process may read (else the volume is streamed)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.R_OK)
    except OSError:
        return False


def _identity(path: str) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or written: inode, size, mtime and ctime."""
    found = os.stat(path)
    return found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


def copy_file(source: str, writer: HashingWriter) -> None:
    """The shut-off guest's volume file at source, as it is stored, into writer (holes stay
    holes); fails if the file was written or replaced meanwhile (the guest was started)."""
    before = _identity(source)
    # The writer's on_bytes keeps the rate; reading needs no throttle of its own.
    for segment in segments(Path(source), on_bytes=lambda _n: None, throttle=Throttle(0)):
        if isinstance(segment, int):
            writer.hole(segment)
        else:
            writer.write(segment)
    if _identity(source) != before:
        raise VirtdeckError(
            f"{os.path.basename(source)} changed while it was copied (was the guest started?); "
            "take the backup again"
        )


def copy_export(
    export: NbdExport,
    path: Path,
    *,
    capacity: int,
    rate: int,
    on_bytes: Callable[[int], None],
) -> tuple[int, str]:
    """The export's disk into a new qcow2 file at path, by qemu-img, reading only the allocated
    extents; then hashed while it is synced; (size, sha256). on_bytes(count) hears of the
    progress (by the disk's capacity) about every TICK seconds and may raise to stop the copy."""
    part = path.with_name(path.name + PART)
    private_file(part).close()  # qemu-img keeps the modes of a file it overwrites
    spec = {
        "driver": "raw",
        "file": {
            "driver": "nbd",
            "server": {"type": "unix", "path": export.socket},
            "export": export.name,
        },
    }
    command = ["qemu-img", "convert", "-p", "-W", "-m", "16", "-O", "qcow2"]
    if rate > 0:
        command += ["-r", str(rate)]
    command += [f"json:{json.dumps(spec)}", str(part)]
    try:
        convert(command, export.name, capacity=capacity, on_bytes=on_bytes)
        written = _hashed_and_synced(part)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def convert(
    command: list[str], name: str, *, capacity: int, on_bytes: Callable[[int], None]
) -> None:
    """Run qemu-img convert -p, passing its progress on; stop it if on_bytes raises."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
        )
        try:
            done, pending = 0, b""
            while True:
                readable, _, _ = select.select([process.stdout], [], [], TICK)
                if readable:
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    pending = (pending + chunk)[-256:]
                    shown = PROGRESS.findall(pending)
                    if shown:
                        now = int(capacity * float(shown[-1]) / 100)
                        on_bytes(max(now - done, 0))
                        done = max(now, done)
                        continue
                on_bytes(0)
            process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        if process.returncode != 0:
            errors.seek(0)
            said = errors.read(4096).decode(errors="replace")
            raise VirtdeckError(one_line(f"copying {name}: {said or 'qemu-img failed'}"))
        on_bytes(max(capacity - done, 0))


def _hashed_and_synced(path: Path) -> tuple[int, str]:
    """The file's (size, sha256), read from the page cache while it is written back."""
    with open(path, "rb") as handle, ThreadPoolExecutor(max_workers=1) as pool:
        synced = pool.submit(os.fsync, handle.fileno())
        digest = sha256_of(path)
        synced.result()
        return os.fstat(handle.fileno()).st_size, digest
