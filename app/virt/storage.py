"""Storage pools, volumes and networks of a host: read them, make and remove volumes."""

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from app.errors import Conflict, NotFound
from app.virt.connection import HostConnection, libvirt_errors, translate
from app.virt.images import HEADER_BYTES, ImageHeader, read_header

T = TypeVar("T")
GIB = 1024**3
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


@dataclass(frozen=True)
class Network:
    """A libvirt virtual network."""

    name: str
    active: bool
    forward: str | None
    bridge: str | None


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
    )


def _volume(lv_volume: libvirt.virStorageVol, pool: str) -> Volume:
    root = ET.fromstring(lv_volume.XMLDesc(0))
    kind, capacity, allocation = lv_volume.info()
    format_ = root.find("target/format")
    return Volume(
        name=lv_volume.name(),
        pool=pool,
        path=lv_volume.path(),
        kind=VOLUME_KINDS.get(kind, "other"),
        format=format_.get("type") if format_ is not None else None,
        capacity=capacity,
        allocation=allocation,
    )


def _network(lv_network: libvirt.virNetwork) -> Network:
    root = ET.fromstring(lv_network.XMLDesc(0))
    forward = root.find("forward")
    bridge = root.find("bridge")
    return Network(
        name=lv_network.name(),
        active=bool(lv_network.isActive()),
        forward=forward.get("mode", "nat") if forward is not None else None,
        bridge=bridge.get("name") if bridge is not None else None,
    )


def _each(items: list, read: Callable[..., T], *args) -> list[T]:
    """Read each listed item, skipping those that vanish between listing and reading."""
    found = []
    for item in items:
        try:
            found.append(read(item, *args))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in VANISHED:
                raise translate(exc) from exc
    return found


def _lookup_pool(conn: HostConnection, name: str) -> libvirt.virStoragePool:
    try:
        return conn.lv.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise NotFound(f"storage pool '{name}' not found on this host") from exc
        raise translate(exc) from exc


def _active_pool(conn: HostConnection, name: str) -> libvirt.virStoragePool:
    lv_pool = _lookup_pool(conn, name)
    with libvirt_errors():
        if not lv_pool.isActive():
            raise Conflict(f"storage pool '{name}' is not active")
    return lv_pool


def list_pools(conn: HostConnection) -> list[Pool]:
    """Every storage pool of the host, by name."""
    with libvirt_errors():
        pools = _each(conn.lv.listAllStoragePools(0), _pool)
    return sorted(pools, key=lambda p: p.name)


def get_pool(conn: HostConnection, name: str) -> Pool:
    """One storage pool, or NotFound."""
    with libvirt_errors():
        return _pool(_lookup_pool(conn, name))


def list_volumes(conn: HostConnection, pool: str) -> list[Volume]:
    """The volumes of an active pool, by name, after asking the pool to rescan."""
    lv_pool = _active_pool(conn, pool)
    # A rescan finds files copied in by hand; a busy pool refuses it, and the last scan will do.
    with contextlib.suppress(libvirt.libvirtError):
        lv_pool.refresh(0)
    with libvirt_errors():
        volumes = _each(lv_pool.listAllVolumes(0), _volume, pool)
    return sorted(volumes, key=lambda v: v.name)


def get_volume(conn: HostConnection, pool: str, name: str) -> Volume:
    """One volume of an active pool, or NotFound."""
    lv_pool = _active_pool(conn, pool)
    try:
        return _volume(lv_pool.storageVolLookupByName(name), pool)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise NotFound(f"volume '{name}' not found in storage pool '{pool}'") from exc
        raise translate(exc) from exc


def _probed_header(lv_volume: libvirt.virStorageVol) -> ImageHeader:
    """What libvirt's own probe of the volume says, for drivers that cannot stream volumes."""
    root = ET.fromstring(lv_volume.XMLDesc(0))
    format_ = root.find("target/format")
    return ImageHeader(
        qcow2=format_ is not None and format_.get("type") == "qcow2",
        backing_file=root.find("backingStore/path") is not None,
    )


def volume_header(conn: HostConnection, pool: str, name: str) -> ImageHeader:
    """What the first bytes of a volume of an active pool claim: read over the connection (so
    remote hosts too), or libvirt's probe where the driver cannot stream volumes (test driver)."""
    lv_pool = _active_pool(conn, pool)
    with libvirt_errors():
        lv_volume = lv_pool.storageVolLookupByName(name)
        stream = conn.lv.newStream(0)
        try:
            lv_volume.download(stream, 0, HEADER_BYTES, 0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                return _probed_header(lv_volume)
            raise
        data = b""
        try:
            while len(data) < HEADER_BYTES and (got := stream.recv(HEADER_BYTES - len(data))):
                if isinstance(got, int):  # -2 cannot happen on a blocking stream
                    break
                data += got
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
    return read_header(data)


def volume_exists(conn: HostConnection, pool: str, name: str) -> bool:
    """Whether the active pool holds a volume of this name."""
    try:
        get_volume(conn, pool, name)
    except NotFound:
        return False
    return True


def create_volume(conn: HostConnection, pool: str, name: str, *, size_gib: int) -> Volume:
    """Make a new, thinly allocated qcow2 volume of size_gib GiB in the pool."""
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="bytes").text = str(size_gib * GIB)
    ET.SubElement(volume, "allocation", unit="bytes").text = "0"
    ET.SubElement(ET.SubElement(volume, "target"), "format", type="qcow2")
    lv_pool = _active_pool(conn, pool)
    with libvirt_errors():
        return _volume(lv_pool.createXML(ET.tostring(volume, encoding="unicode"), 0), pool)


def delete_volume(conn: HostConnection, pool: str, name: str) -> None:
    """Delete a volume from its pool."""
    lv_pool = _active_pool(conn, pool)
    with libvirt_errors():
        lv_pool.storageVolLookupByName(name).delete(0)


def list_networks(conn: HostConnection) -> list[Network]:
    """Every virtual network of the host, by name."""
    with libvirt_errors():
        networks = _each(conn.lv.listAllNetworks(0), _network)
    return sorted(networks, key=lambda n: n.name)


def get_network(conn: HostConnection, name: str) -> Network:
    """One virtual network, or NotFound."""
    try:
        return _network(conn.lv.networkLookupByName(name))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            raise NotFound(f"network '{name}' not found on this host") from exc
        raise translate(exc) from exc
