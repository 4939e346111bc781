"""Backup copies of a shut-off guest on a local host, with no libvirt stream in between: its
volume file read as it is stored (holes skipped, hashed while it is written), byte for byte,
never interpreted by a probed format; and convert(), which runs a qemu-img convert with progress
and cancel (rebuilding a disk for a restore, app.services.backups.deltas).
"""

import os
import re
import select
import stat
import subprocess
import tempfile
from collections.abc import Callable

from app.errors import VirtdeckError
from app.services.backups.streams import HashingWriter, runs
from app.virt.failures import one_line

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
    holes), read into the writer's buffers; fails if the file was written or replaced meanwhile
    (the guest was started). The writer's on_bytes keeps the rate."""
    before = _identity(source)
    fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for offset, end, data in runs(fd, before[1]):
            if not data:
                writer.hole(end - offset)
            while data and offset < end:
                buffer = writer.buffer()
                wanted = memoryview(buffer)[: min(len(buffer), end - offset)]
                count = os.preadv(fd, [wanted], offset)
                writer.write_buffer(buffer, count)
                if count == 0:  # the file shrank: its identity below says so
                    break
                offset += count
    finally:
        os.close(fd)
    if _identity(source) != before:
        raise VirtdeckError(
            f"{os.path.basename(source)} changed while it was copied (was the guest started?); "
            "take the backup again"
        )


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
