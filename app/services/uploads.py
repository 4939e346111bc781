"""Uploads of ISO and disk images into a host's storage pool, streamed through libvirt's volume
upload (so remote hosts too): the checks before the first byte is written (name, size against
the limit and the pool's free space, the name free), the bytes with their SHA-256 on the way,
the header check after. A volume whose upload fails, ends short or is refused is removed."""

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.errors import Conflict, Invalid, NotFound, VirtdeckError
from app.services.guest_create.on_host import check_header
from app.services.guest_create.request import VolumeRef
from app.services.hosts import get_host
from app.services.ports import HostCalls
from app.units import human_bytes
from app.virt import volumes
from app.virt.connection import HostConnection

# What the user says the image is; never guessed from its bytes. An ISO is stored as raw.
FORMATS = ("raw", "qcow2", "iso")
NAME_MAX = 128
# The slowest upload (bytes a second) that still finishes: it bounds how long the host call may
# take, so a wedged one ends some day (keepalive ends one whose host went away much sooner).
SLOWEST = 64 * 1024
# Uploads at once in one process: each holds one of the 8 threads that every host call of the
# process shares (app.workers.calls) for as long as it lasts, and must leave the others free.
AT_ONCE = 4
_running = threading.BoundedSemaphore(AT_ONCE)


class LengthRequired(VirtdeckError):
    """The request did not say how many bytes it sends."""

    status_code = 411


class TooManyUploads(VirtdeckError):
    """As many uploads as this process takes at once are running."""

    status_code = 429


@dataclass(frozen=True)
class Uploaded:
    """A volume made from an upload, and the SHA-256 of the bytes it holds."""

    pool: str
    name: str
    path: str
    format: str
    size: int
    sha256: str


def check_name(name: str) -> None:
    """Refuse a volume name that is empty, too long, hidden, or could name another path."""
    if not name.strip() or len(name) > NAME_MAX:
        raise Invalid(f"name: 1 to {NAME_MAX} characters", field="name")
    if name.startswith(".") or "/" in name or not name.isprintable():
        raise Invalid(
            "name: no '/', no control characters, and not starting with '.'", field="name"
        )


def check_size(size: int | None, *, limit: int) -> int:
    """The announced size, refused when missing, empty or over the limit."""
    if size is None:
        raise LengthRequired("size: send the image with a Content-Length header", field="size")
    if size <= 0:
        raise Invalid("size: the image is empty", field="size")
    if size > limit:
        raise Invalid(
            f"size: {human_bytes(size)} is over the upload limit of {human_bytes(limit)}",
            field="size",
        )
    return size


def _check_pool(conn: HostConnection, *, pool: str, name: str, size: int) -> None:
    """Refuse before anything is made: a pool that is not there or not active, not enough free
    space, a name taken in it."""
    try:
        found = volumes.get_pool(conn, pool)
    except NotFound as exc:
        raise NotFound(f"pool: no storage pool '{pool}' on this host", field="pool") from exc
    if not found.active:
        raise Conflict(f"pool: storage pool '{pool}' is not active", field="pool")
    if size > found.available:
        raise Invalid(
            f"size: {human_bytes(size)} does not fit in pool '{pool}' "
            f"({human_bytes(found.available)} free)",
            field="size",
        )
    if volumes.volume_exists(conn, pool, name):
        raise Conflict(f"name: pool '{pool}' already has a volume '{name}'", field="name")


def _counted(
    chunks: Iterable[bytes], *, size: int, hash_: Callable[[bytes], None]
) -> Iterator[bytes]:
    """The chunks, each hashed on the way; Invalid naming size when they end short of or past
    the size announced."""
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            raise Invalid(f"size: the body is longer than the {size} bytes announced", field="size")
        hash_(chunk)
        yield chunk
    if sent < size:
        raise Invalid(
            f"size: the upload ended after {sent} of {size} bytes; nothing was kept",
            field="size",
        )


def _upload(
    conn: HostConnection, *, pool: str, name: str, fmt: str, size: int, chunks: Iterable[bytes]
) -> Uploaded:
    """Check, make the volume, stream the bytes in and check their header (runs on the host's
    connection); the volume is deleted if any of it fails."""
    _check_pool(conn, pool=pool, name=name, size=size)
    volume = volumes.create_volume(conn, pool, name, capacity=size, fmt="raw")
    digest = hashlib.sha256()
    try:
        volumes.upload(conn, volume.path, _counted(chunks, size=size, hash_=digest.update))
        as_format = "qcow2" if fmt == "qcow2" else "raw"
        header = volumes.volume_header(conn, pool, name)
        check_header(header, VolumeRef(pool=pool, volume=name, format=as_format), "upload")
    except BaseException:
        with contextlib.suppress(VirtdeckError):
            volumes.delete_volume(conn, pool, name)
        raise
    return Uploaded(
        pool=pool, name=name, path=volume.path, format=fmt, size=size, sha256=digest.hexdigest()
    )


def upload_image(
    sessions: sessionmaker[Session],
    sync: HostCalls,
    *,
    host_id: int,
    pool: str,
    name: str,
    fmt: str,
    size: int | None,
    limit: int,
    chunks: Iterable[bytes],
) -> Uploaded:
    """Stream an image of size bytes (at most limit) into a new volume `name` of the host's
    pool; blocks until it is stored and checked, or removed again."""
    size = check_size(size, limit=limit)
    check_name(name)
    if fmt not in FORMATS:
        raise Invalid(f"format: one of {', '.join(FORMATS)}", field="format")
    with sessions() as session:
        host_id = get_host(session, host_id).id
    if not _running.acquire(blocking=False):
        raise TooManyUploads(f"{AT_ONCE} uploads are running already; try again when one is done")
    try:
        return sync.call(
            host_id,
            lambda conn: _upload(conn, pool=pool, name=name, fmt=fmt, size=size, chunks=chunks),
            timeout=60 + size / SLOWEST,
        )
    finally:
        _running.release()
