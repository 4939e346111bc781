"""Storage pools and volumes of a host: list and read them, find one by path or a pool by
directory, make, delete and copy volumes, and stream their bytes both ways.

Everything goes through the libvirt connection, so a remote host's storage works like the local.
(Over 300 lines: pools, volumes and their streams are one libvirt object family, read together.)
"""

import contextlib
import posixpath
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from app.errors import Conflict, NotFound, VirtdeckError
from app.virt.connection import HostConnection
from app.virt.disks import Disk
from app.virt.failures import libvirt_errors, translate
from app.virt.images import HEADER_BYTES, ImageHeader, read_header

T = TypeVar("T")
GIB = 1024**3
# libvirt streams carry at most 256 KiB a message, and libvirt-python allocates (and zeroes)
# whatever is asked for on every read: asking for one message is the fastest.
CHUNK = 256 * 1024
# Pool types whose volumes are files that can hold qcow2.
FILE_POOL_TYPES = frozenset({"dir", "fs", "netfs"})
VOLUME_KINDS = {
    libvirt.VIR_STORAGE_VOL_FILE: "file",
    libvirt.VIR_STORAGE_VOL_BLOCK: "block",
    libvirt.VIR_STORAGE_VOL_DIR: "dir",
    libvirt.VIR_STORAGE_VOL_NETWORK: "network",
    libvirt.VIR_STORAGE_VOL_NETDIR: "netdir",
}
VANISHED = {
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_NETWORK,
}
ACTIVE = libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE
# How long a rescan waits for a pool busy with a volume stream.
BUSY_WAIT_S = 30.0


@dataclass(frozen=True)
class Pool:
    """A storage pool and its space, in bytes."""

    name: str
    type: str
    active: bool
    capacity: int
    allocation: int
    available: int
    path: str | None
    autostart: bool = False

    @property
    def holds_qcow2(self) -> bool:
        """Whether new qcow2 volumes can be made in this pool."""
        return self.type in FILE_POOL_TYPES


@dataclass(frozen=True)
class Volume:
    """A storage volume: where it is, what kind and format, and its sizes in bytes."""

    name: str
    pool: str
    path: str
    kind: str
    format: str | None
    capacity: int
    allocation: int

    @property
    def iso(self) -> bool:
        """Whether it looks like boot media (an ISO image)."""
        return self.format == "iso" or self.name.lower().endswith(".iso")


def _pool(lv_pool: libvirt.virStoragePool) -> Pool:
    root = ET.fromstring(lv_pool.XMLDesc(0))
    _state, capacity, allocation, available = lv_pool.info()
    return Pool(
        name=lv_pool.name(),
        type=root.get("type", ""),
        active=bool(lv_pool.isActive()),
        capacity=capacity,
        allocation=allocation,
        available=available,
        path=root.findtext("target/path"),
        autostart=bool(lv_pool.autostart()),
    )


def _volume(lv_volume: libvirt.virStorageVol, pool: str | None = None) -> Volume:
    root = ET.fromstring(lv_volume.XMLDesc(0))
    kind, capacity, allocation = lv_volume.info()
    format_ = root.find("target/format")
    return Volume(
        name=lv_volume.name(),
        pool=pool or lv_volume.storagePoolLookupByVolume().name(),
        path=lv_volume.path(),
        kind=VOLUME_KINDS.get(kind, "other"),
        format=format_.get("type") if format_ is not None else None,
        capacity=capacity,
        allocation=allocation,
    )


def read_each(items: list, read: Callable[..., T], *args) -> list[T]:
    """Read each listed pool, volume or network, skipping those that vanish meanwhile."""
    found = []
    for item in items:
        try:
            found.append(read(item, *args))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in VANISHED:
                raise translate(exc) from exc
    return found


def lookup_pool(conn: HostConnection, name: str) -> libvirt.virStoragePool:
    try:
        return conn.lv.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise NotFound(f"storage pool '{name}' not found on this host") from exc
        raise translate(exc) from exc


def _active_pool(conn: HostConnection, name: str) -> libvirt.virStoragePool:
    lv_pool = lookup_pool(conn, name)
    with libvirt_errors():
        if not lv_pool.isActive():
            raise Conflict(f"storage pool '{name}' is not active")
    return lv_pool


def list_pools(conn: HostConnection) -> list[Pool]:
    """Every storage pool of the host, by name."""
    with libvirt_errors():
        pools = read_each(conn.lv.listAllStoragePools(0), _pool)
    return sorted(pools, key=lambda p: p.name)


def get_pool(conn: HostConnection, name: str) -> Pool:
    """One storage pool, or NotFound."""
    with libvirt_errors():
        return _pool(lookup_pool(conn, name))


def pool_active(conn: HostConnection, name: str) -> bool:
    """Whether the host has an active pool of this name."""
    try:
        return get_pool(conn, name).active
    except NotFound:
        return False


def _pools_of_directory(lv: libvirt.virConnect, directory: str) -> list[libvirt.virStoragePool]:
    """The active pools whose target directory is directory; one that vanishes is skipped."""
    found = []
    for lv_pool in lv.listAllStoragePools(ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            target = ET.fromstring(lv_pool.XMLDesc(0)).findtext("target/path")
            if target and posixpath.normpath(target) == directory:
                found.append(lv_pool)
    return found


def pool_by_directory(conn: HostConnection, path: str) -> str | None:
    """The name of the active pool whose directory would hold path, if any."""
    directory = posixpath.dirname(posixpath.normpath(path))
    with libvirt_errors():
        pools = _pools_of_directory(conn.lv, directory)
        return pools[0].name() if pools else None


def list_volumes(conn: HostConnection, pool: str) -> list[Volume]:
    """The volumes of an active pool, by name, after asking the pool to rescan."""
    lv_pool = _active_pool(conn, pool)
    # A rescan finds files copied in by hand; a busy pool refuses it, and the last scan will do.
    with contextlib.suppress(libvirt.libvirtError):
        lv_pool.refresh(0)
    with libvirt_errors():
        volumes = read_each(lv_pool.listAllVolumes(0), _volume, pool)
    return sorted(volumes, key=lambda v: v.name)


def _lookup_volume(conn: HostConnection, pool: str, name: str) -> libvirt.virStorageVol:
    lv_pool = _active_pool(conn, pool)
    try:
        return lv_pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise NotFound(f"volume '{name}' not found in storage pool '{pool}'") from exc
        raise translate(exc) from exc


def get_volume(conn: HostConnection, pool: str, name: str) -> Volume:
    """One volume of an active pool, or NotFound."""
    lv_volume = _lookup_volume(conn, pool, name)
    with libvirt_errors():
        return _volume(lv_volume, pool)


def volume_exists(conn: HostConnection, pool: str, name: str) -> bool:
    """Whether the active pool holds a volume of this name."""
    try:
        _lookup_volume(conn, pool, name)
    except NotFound:
        return False
    return True


def _at(lv: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    """The volume an active pool knows at path, or None."""
    try:
        return lv.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


def _find(lv: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    """The volume at path, rescanning its pool once for a file libvirt has not seen yet."""
    found = _at(lv, path)
    if found is None:
        pools = _pools_of_directory(lv, posixpath.dirname(posixpath.normpath(path)))
        for lv_pool in pools:
            with contextlib.suppress(libvirt.libvirtError):
                lv_pool.refresh(0)
        found = _at(lv, path) if pools else None
    return found


def refresh(lv_pool: libvirt.virStoragePool, *, wait: float = BUSY_WAIT_S) -> None:
    """Rescan the pool, so that it reads its volumes' headers again; a pool busy with a volume
    stream (an upload, a copy) refuses, so it is asked again for up to wait seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            lv_pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            busy = "asynchronous jobs" in (exc.get_error_message() or "")
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def refreshed_volume(conn: HostConnection, path: str) -> libvirt.virStorageVol | None:
    """The volume at path as its pool reads it after a rescan now, or None (for app.virt:
    the caller reads and acts on it under libvirt_errors)."""
    found = _find(conn.lv, path)
    if found is None:
        return None
    refresh(found.storagePoolLookupByVolume())
    return _at(conn.lv, path)


def find_volume(conn: HostConnection, path: str) -> Volume | None:
    """The storage volume at path, or None when no active pool has one there."""
    with libvirt_errors():
        found = _find(conn.lv, path)
        return _volume(found) if found is not None else None


def volume_path(conn: HostConnection, disk: Disk) -> str | None:
    """The host path of a file, block or pool-volume disk; None for others, or a pool volume
    its pool does not have."""
    if disk.kind != "volume":
        return disk.path
    if not (disk.pool and disk.volume):
        return None
    try:
        path = conn.lv.storagePoolLookupByName(disk.pool).storageVolLookupByName(disk.volume).path()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in VANISHED:
            return None
        raise translate(exc) from exc
    return posixpath.normpath(path)


def allocation(conn: HostConnection, path: str) -> int:
    """The bytes the volume at path takes on its host."""
    with libvirt_errors():
        return conn.lv.storageVolLookupByPath(path).info()[2]


def _backing(lv_volume: libvirt.virStorageVol) -> str | None:
    """The backing file the volume's header names, as libvirt read it."""
    return ET.fromstring(lv_volume.XMLDesc(0)).findtext("backingStore/path")


def backing_file(conn: HostConnection, path: str) -> str | None:
    """The backing file the header of the volume at path names, if any."""
    with libvirt_errors():
        return _backing(conn.lv.storageVolLookupByPath(path))


def backing_files(conn: HostConnection) -> dict[str, str]:
    """Volume path → the path of its backing image, for every volume of every active pool."""
    backing: dict[str, str] = {}
    with libvirt_errors():
        for lv_pool in conn.lv.listAllStoragePools(ACTIVE):
            try:
                lv_volumes = lv_pool.listAllVolumes(0)
            except libvirt.libvirtError as exc:  # stopped or removed since it was listed
                if exc.get_error_code() not in (*VANISHED, libvirt.VIR_ERR_OPERATION_INVALID):
                    raise
                continue
            for path, base in read_each(lv_volumes, lambda v: (v.path(), _backing(v))):
                if base:  # relative to the volume's directory, as qemu reads it
                    top = posixpath.normpath(path)
                    backing[top] = posixpath.normpath(posixpath.join(posixpath.dirname(top), base))
    return backing


def create_volume(
    conn: HostConnection, pool: str, name: str, *, capacity: int, fmt: str = "qcow2"
) -> Volume:
    """Make a new, thinly allocated volume of capacity bytes in an active pool."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(capacity)
    ET.SubElement(volume, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(volume, "target"), "format", type=fmt)
    lv_pool = _active_pool(conn, pool)
    with libvirt_errors():
        return _volume(lv_pool.createXML(ET.tostring(volume, encoding="unicode"), 0), pool)


def delete_volume(conn: HostConnection, pool: str, name: str) -> None:
    """Delete a volume from its pool."""
    lv_volume = _lookup_volume(conn, pool, name)
    with libvirt_errors():
        lv_volume.delete(0)


def delete_volume_at(conn: HostConnection, path: str) -> None:
    """Delete the volume at path if there is one."""
    with libvirt_errors():
        found = _find(conn.lv, path)
        if found is not None:
            found.delete(0)


def clone_volume(
    conn: HostConnection,
    path: str,
    name: str,
    *,
    pool: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> str:
    """Copy the volume at path byte for byte to a new volume `name` in pool (its own unless
    named); returns its path. The bytes are streamed, never read as an image: libvirt's own copy
    would convert from the format it probed, following whatever backing file the header names.
    on_bytes(count) is called for each chunk of data copied and may raise to stop the copy, which
    is then removed."""
    with libvirt_errors():
        source = conn.lv.storageVolLookupByPath(path)
        pool = pool or source.storagePoolLookupByVolume().name()
        physical = source.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
    copy = create_volume(conn, pool, name, capacity=physical, fmt="raw").path
    try:
        upload(conn, copy, _counted(_segments(conn, path), on_bytes))
    except BaseException:
        with contextlib.suppress(VirtdeckError):
            delete_volume_at(conn, copy)
        raise
    return copy


def _counted(
    segments: Iterable[bytes | int], on_bytes: Callable[[int], None] | None
) -> Iterator[bytes | int]:
    """The segments, telling on_bytes the length of each piece of data as it passes."""
    for segment in segments:
        if on_bytes is not None and not isinstance(segment, int):
            on_bytes(len(segment))
        yield segment


@contextlib.contextmanager
def _finished(stream: libvirt.virStream) -> Iterator[libvirt.virStream]:
    """The stream, finished when the block ends or aborted when it fails."""
    try:
        yield stream
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise


def volume_header(conn: HostConnection, pool: str, name: str) -> ImageHeader:
    """What the first bytes of a volume of an active pool claim: read over the connection (so
    remote hosts too), or libvirt's probe where the driver cannot stream volumes (test driver)."""
    lv_volume = _lookup_volume(conn, pool, name)
    data = b""
    with libvirt_errors():
        stream = conn.lv.newStream(0)
        try:
            lv_volume.download(stream, 0, HEADER_BYTES, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            root = ET.fromstring(lv_volume.XMLDesc(0))
            return ImageHeader(
                qcow2=root.find("target/format[@type='qcow2']") is not None,
                backing_file=root.find("backingStore/path") is not None,
            )
        with _finished(stream):
            while len(data) < HEADER_BYTES and (got := stream.recv(HEADER_BYTES - len(data))):
                if isinstance(got, int):  # -2 cannot happen on a blocking stream
                    break
                data += got
    return read_header(data)


def _segments(conn: HostConnection, path: str) -> Iterator[bytes | int]:
    """The volume at path as it is stored: bytes for data, an int for each hole's length."""
    with libvirt_errors():
        lv_volume = conn.lv.storageVolLookupByPath(path)
        stream = conn.lv.newStream(0)
        lv_volume.download(stream, 0, 0, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        with _finished(stream):
            while True:
                got = stream.recvFlags(CHUNK, libvirt.VIR_STREAM_RECV_STOP_AT_HOLE)
                if got == -3:
                    yield stream.recvHole(0)
                elif isinstance(got, int):
                    raise VirtdeckError("the volume stream failed")
                elif not got:
                    break
                else:
                    yield got


def download(
    conn: HostConnection, path: str, write: Callable[[bytes], None], hole: Callable[[int], None]
) -> None:
    """Stream the volume at path: write(data) for data, hole(length) for each hole."""
    for segment in _segments(conn, path):
        if isinstance(segment, int):
            hole(segment)
        else:
            write(segment)


def upload(conn: HostConnection, path: str, segments: Iterable[bytes | int]) -> None:
    """Write the volume at path from segments: bytes are data, an int is a hole that long."""
    with libvirt_errors():
        lv_volume = conn.lv.storageVolLookupByPath(path)
        stream = conn.lv.newStream(0)
        lv_volume.upload(stream, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        with _finished(stream):
            for segment in segments:
                if isinstance(segment, int):
                    stream.sendHole(segment, 0)
                else:
                    stream.send(segment)
