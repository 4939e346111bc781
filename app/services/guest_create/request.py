"""A request to create a guest, and the checks that need no call to its host: the name rule,
sizes, devices, the base image and cloud-init asked for, the CPU, the policy."""

import re
from dataclasses import dataclass
from functools import partial

from sqlalchemy.orm import Session

from app.errors import Invalid, check_all
from app.models import Host
from app.services.auth import Principal
from app.services.guest_create.cloud_init import CloudInit, check_cloud_init
from app.services.overcommit import check_force, check_policy
from app.virt.connection import CPU_PROBE_PREFIX
from app.virt.cpu import CPU_MODES

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
MIN_MEMORY_MIB = 64
MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB, for hosts whose memory is not known yet
MAX_VCPUS = 4096
MAX_DISK_GIB = 64 * 1024
MAX_REF = 255  # pool, volume and network names
FIRMWARES = ("bios", "uefi")
# The formats an existing volume may be attached as: the request says which (never libvirt's
# probe of the volume's header, which a guest can write); a CD-ROM is always raw.
VOLUME_FORMATS = ("raw", "qcow2")
# How a new disk is made from a base image: a copy of it, or a qcow2 overlay backed by it.
IMAGE_MODES = ("copy", "overlay")


def check_guest_name(name: str) -> None:
    """A new guest's name follows the rule and is none of virtdeck's own probe guests'."""
    if not name or not NAME.fullmatch(name):
        raise Invalid(f"name: {NAME_RULE}", field="name")
    if name.startswith(CPU_PROBE_PREFIX):
        raise Invalid(
            f"name: names starting with {CPU_PROBE_PREFIX} are kept for virtdeck's CPU probe",
            field="name",
        )


def volume_name(guest_name: str, fmt: str = "qcow2") -> str:
    """The name of a new guest's new volume: its name with .qcow2 (.img for a raw copy)."""
    return f"{guest_name}.{'img' if fmt == 'raw' else 'qcow2'}"


@dataclass(frozen=True)
class NewDisk:
    """A new qcow2 volume of size_gib GiB, to be made in pool."""

    pool: str
    size_gib: int


@dataclass(frozen=True)
class VolumeRef:
    """An existing volume of a storage pool, and the format to attach it as."""

    pool: str
    volume: str
    format: str = "raw"


@dataclass(frozen=True)
class BaseImage:
    """The image a new disk is made from: an existing volume in the format the user names,
    copied (copy) or put behind a new qcow2 volume (overlay)."""

    pool: str
    volume: str
    format: str = "qcow2"
    mode: str = "copy"

    @property
    def ref(self) -> VolumeRef:
        """The image as a volume to attach."""
        return VolumeRef(pool=self.pool, volume=self.volume, format=self.format)

    @property
    def new_format(self) -> str:
        """The format of the disk made from it: a copy keeps the image's, an overlay is qcow2."""
        return self.format if self.mode == "copy" else "qcow2"


@dataclass(frozen=True)
class CreateRequest:
    """What a user asks for; nothing in it is trusted yet."""

    host_id: int | None
    name: str
    vcpus: int
    memory_mib: int
    disk: NewDisk | VolumeRef | None = None
    cdrom: VolumeRef | None = None
    network: str | None = None
    # With a new disk: the disk is made from this image; cloud-init then seeds the guest.
    image: BaseImage | None = None
    cloud_init: CloudInit | None = None
    firmware: str = "bios"
    # None: what the host's CPU probe found QEMU starts (app.virt.cpu).
    cpu_mode: str | None = None
    cpu_model: str | None = None
    start: bool = False
    force: bool = False


def disk_choice(
    pool: str | None, size_gib: int | None, volume: str | None, *, format_: str | None = None
) -> NewDisk | VolumeRef:
    """A new volume (pool and size) or an existing one (pool, volume and its format, raw unless
    it says), never both."""
    if size_gib is not None and volume is not None:
        raise Invalid(
            "disk.volume: give a size for a new volume or an existing volume, not both",
            field="disk.volume",
        )
    if size_gib is None and volume is None:
        raise Invalid(
            "disk.size_gib: give a size in GiB for a new volume, or an existing volume",
            field="disk.size_gib",
        )
    if volume is not None:
        return VolumeRef(pool=pool or "", volume=volume, format=format_ or "raw")
    if format_ is not None:
        raise Invalid(
            "disk.format: only for an existing volume (a new one is always qcow2)",
            field="disk.format",
        )
    return NewDisk(pool=pool or "", size_gib=size_gib or 0)


def _check_ref(value: str, field: str, what: str) -> None:
    if not value or len(value) > MAX_REF:
        raise Invalid(f"{field}: choose a {what}", field=field)


def _check_vcpus(request: CreateRequest, host: Host | None) -> None:
    if not 1 <= request.vcpus <= MAX_VCPUS:
        raise Invalid(f"vcpus: a whole number from 1 to {MAX_VCPUS}", field="vcpus")
    cpus = host.cpus_online if host is not None else None
    if cpus and request.vcpus > cpus and not request.force:
        raise Invalid(
            f"vcpus: the host has {cpus} CPUs; more vCPUs than that needs force (admins only)",
            field="vcpus",
        )


def _check_memory(request: CreateRequest, host: Host | None) -> None:
    limit = host.memory_kib // 1024 if host is not None and host.memory_kib else MAX_MEMORY_MIB
    if not MIN_MEMORY_MIB <= request.memory_mib <= limit:
        raise Invalid(
            f"memory_mib: from {MIN_MEMORY_MIB} MiB to {limit} MiB (the host's memory)",
            field="memory_mib",
        )


def _check_disk(request: CreateRequest) -> None:
    disk = request.disk
    if disk is not None:
        _check_ref(disk.pool, "disk.pool", "storage pool")
    if isinstance(disk, NewDisk) and not 1 <= disk.size_gib <= MAX_DISK_GIB:
        raise Invalid(
            f"disk.size_gib: a whole number of GiB from 1 to {MAX_DISK_GIB}", field="disk.size_gib"
        )
    if isinstance(disk, VolumeRef):
        _check_ref(disk.volume, "disk.volume", "volume")
        if disk.format not in VOLUME_FORMATS:
            raise Invalid("disk.format: raw or qcow2", field="disk.format")


def _check_cdrom(request: CreateRequest) -> None:
    if request.cdrom is not None:
        _check_ref(request.cdrom.pool, "cdrom.pool", "storage pool")
        _check_ref(request.cdrom.volume, "cdrom.volume", "volume")
        if request.cdrom.format != "raw":
            raise Invalid(
                "cdrom.format: a CD-ROM is attached read-only as raw", field="cdrom.format"
            )


def _check_network(request: CreateRequest) -> None:
    if request.network is not None:
        _check_ref(request.network, "network", "network")


def _check_firmware(request: CreateRequest) -> None:
    if request.firmware not in FIRMWARES:
        raise Invalid("firmware: bios or uefi", field="firmware")


def check_image(image: BaseImage) -> None:
    """A base image names a pool and a volume, a format and a mode virtdeck knows."""
    _check_ref(image.pool, "image.pool", "storage pool")
    _check_ref(image.volume, "image.volume", "volume")
    if image.format not in VOLUME_FORMATS:
        raise Invalid(
            "image.format: raw or qcow2 (never read from the image)", field="image.format"
        )
    if image.mode not in IMAGE_MODES:
        raise Invalid("image.mode: copy or overlay", field="image.mode")


def check_seeded_image(image: BaseImage | None) -> None:
    """cloud-init comes with a base image: it seeds a guest made from a cloud image."""
    if image is None:
        raise Invalid(
            "image.volume: cloud-init seeds a guest made from a cloud image; choose one",
            field="image.volume",
        )


def _check_image(request: CreateRequest) -> None:
    if request.image is not None:
        if not isinstance(request.disk, NewDisk):
            raise Invalid(
                "disk.size_gib: a disk made from an image needs a pool and a size",
                field="disk.size_gib",
            )
        check_image(request.image)
    if request.cloud_init is not None:
        check_seeded_image(request.image)
        check_cloud_init(request.cloud_init, guest_name=request.name)


def _check_cpu_request(request: CreateRequest) -> None:
    if request.cpu_mode is not None and request.cpu_mode not in CPU_MODES:
        raise Invalid(
            f"cpu_mode: one of {', '.join(CPU_MODES)}, or leave it out for the host's choice",
            field="cpu_mode",
        )
    if (request.cpu_mode == "custom") != (request.cpu_model is not None):
        raise Invalid(
            "cpu_model: name a CPU model with cpu_mode custom, and only then", field="cpu_model"
        )
    if request.cpu_model is not None:
        _check_ref(request.cpu_model, "cpu_model", "CPU model")


def check_request(session: Session, request: CreateRequest, principal: Principal) -> Host:
    """The host, once everything that needs no call to it is acceptable."""
    if request.force:
        check_force(principal, "a guest with more vCPUs than host CPUs, or over the policy")
    host = session.get(Host, request.host_id) if request.host_id is not None else None

    def check_host() -> None:
        if host is None:
            raise Invalid("host_id: choose a registered host", field="host_id")

    # Every field's error at once (a form shows them together), not one per submit.
    check_all(
        check_host,
        lambda: check_guest_name(request.name),
        *(partial(check, request, host) for check in (_check_vcpus, _check_memory)),
        *(partial(check, request) for check in (
            _check_disk, _check_cdrom, _check_network, _check_image, _check_firmware,
            _check_cpu_request,
        )),
    )  # fmt: skip
    if not request.force:  # a new guest counts as running, started now or later
        memory_kib = request.memory_mib * 1024
        check_policy(
            session, host.id, add_vcpus=request.vcpus, add_memory_kib=memory_kib, action="create"
        )
    return host
