"""The one reader of a domain's `<disk>` element (after virtinst's DeviceDisk): where its data
is, in what format and on which bus, and whether it is the guest's own data at all."""

import posixpath
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from enum import StrEnum

# Which attribute of <source> says where the data is, by <disk type=...>.
SOURCE_ATTRIBUTE = {"file": "file", "block": "dev", "dir": "dir", "network": "name"}
MEDIA_DEVICES = frozenset({"cdrom", "floppy"})
# The user alias virtdeck gives the CD-ROM holding a cloud-init seed it made for the guest: the
# guest's own, so deleting the guest with its storage removes it.
SEED_ALIAS = "ua-virtdeck-seed"


class Aside(StrEnum):
    """Why a disk is not the guest's own data: never backed up with it, never removed with it."""

    NOT_A_DISK = "not a disk"  # a CD-ROM, a floppy, or a host LUN handed through
    EMPTY = "empty"
    ISO = "iso image"
    READONLY = "read-only"
    SHAREABLE = "shareable"


@dataclass(frozen=True)
class Disk:
    """A `<disk>` (or one of its `<backingStore>`s) as its XML says, with nothing looked up."""

    device: str = "disk"
    # The <disk type>: file, block, volume, network, dir, ...
    kind: str = "file"
    # Where the data is, as written: a file or device path, a directory, a network image name
    # (or its protocol when it has none), "pool/volume"; None for an empty drive.
    source: str | None = None
    pool: str | None = None
    volume: str | None = None
    format: str | None = None
    target: str = ""
    bus: str | None = None
    readonly: bool = False
    shareable: bool = False
    alias: str | None = None
    # The images behind it, nearest first, as far as the XML spells them out.
    backing: tuple["Disk", ...] = ()

    @property
    def path(self) -> str | None:
        """The host path of a file or block disk (normalised); None for other kinds."""
        if self.kind in ("file", "block") and self.source:
            return posixpath.normpath(self.source)
        return None

    @property
    def is_seed(self) -> bool:
        """Whether it is a cloud-init seed virtdeck made for this guest."""
        return self.alias == SEED_ALIAS and self.is_media

    @property
    def is_media(self) -> bool:
        """Whether it is a removable-media drive (CD-ROM or floppy)."""
        return self.device in MEDIA_DEVICES

    @property
    def is_empty(self) -> bool:
        """Whether the drive holds nothing (no source)."""
        return self.source is None

    @property
    def is_iso(self) -> bool:
        """Whether its image is named like boot media."""
        return (self.source or "").lower().endswith(".iso")

    @property
    def aside(self) -> Aside | None:
        """Why this is not the guest's own data, the first reason that applies; None if it is."""
        if self.device != "disk":
            return Aside.NOT_A_DISK
        if self.is_empty:
            return Aside.EMPTY
        if self.is_iso:
            return Aside.ISO
        if self.readonly:
            return Aside.READONLY
        if self.shareable:
            return Aside.SHAREABLE
        return None

    @property
    def holds_data(self) -> bool:
        """Whether the guest's own writable data is on it (what a backup copies and a delete
        may remove)."""
        return self.aside is None


def _source(kind: str, source: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    """(where, pool, volume) of a <source> element."""
    if source is None:
        return None, None, None
    if kind == "volume":
        pool, volume = source.get("pool"), source.get("volume")
        return (f"{pool}/{volume}" if pool and volume else None), pool, volume
    where = source.get(SOURCE_ATTRIBUTE.get(kind, ""))
    if kind == "network":
        where = where or source.get("protocol")
    return where or None, None, None


def _read(element: ET.Element, backing: tuple[Disk, ...] = ()) -> Disk:
    kind = element.get("type", "file")
    where, pool, volume = _source(kind, element.find("source"))
    # A <disk> names its format in <driver>, a <backingStore> in <format>.
    format_ = element.find("driver")
    if format_ is None:
        format_ = element.find("format")
    target = element.find("target")
    alias = element.find("alias")
    return Disk(
        device=element.get("device", "disk"),
        kind=kind,
        source=where,
        pool=pool,
        volume=volume,
        format=format_.get("type") if format_ is not None else None,
        target=target.get("dev", "") if target is not None else "",
        bus=target.get("bus") if target is not None else None,
        readonly=element.find("readonly") is not None,
        shareable=element.find("shareable") is not None,
        alias=alias.get("name") if alias is not None else None,
        backing=backing,
    )


def read_disk(element: ET.Element) -> Disk:
    """The disk a `<disk>` element describes, with the backing chain its XML spells out."""
    chain = []
    store = element.find("backingStore")
    while store is not None:
        chain.append(_read(store))
        store = store.find("backingStore")
    return _read(element, tuple(b for b in chain if not b.is_empty))


def read_disks(domain: ET.Element) -> tuple[Disk, ...]:
    """Every disk of a parsed `<domain>`, in document order."""
    return tuple(read_disk(d) for d in domain.findall("devices/disk"))
