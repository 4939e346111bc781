"""The checks of a create request against its host (run on the host's connection): the name is
free, the volumes, ISO, base image and network exist and are safe to attach, the CPU; the result
is a plan."""

import logging
import uuid as uuid_lib
from dataclasses import dataclass

from app.errors import Conflict, Invalid, NotFound
from app.services.guest_create.cloud_init import Seed
from app.services.guest_create.request import (
    BaseImage,
    CreateRequest,
    NewDisk,
    VolumeRef,
    volume_name,
)
from app.services.guest_create.seed_iso import seed_volume_name
from app.virt import build, devices, domains, networks, volumes
from app.virt.build import DiskSource, GuestPlan
from app.virt.connection import HostConnection
from app.virt.cpu import CpuConfig, CpuProbe
from app.virt.cpu import probe as cpu_probe
from app.virt.images import ImageHeader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageDisk:
    """A checked base image: how the new disk is made from it, and where it is (in the format
    the user named)."""

    image: BaseImage
    source: DiskSource


@dataclass(frozen=True)
class CreatePlan:
    """A checked request: the guest to define, the volume to make first (from a base image, with
    a cloud-init seed beside it), whether to start."""

    host_id: int
    guest: GuestPlan
    new_disk: NewDisk | None
    start: bool
    image: ImageDisk | None = None
    seed: Seed | None = None

    @property
    def volume_name(self) -> str:
        """The name of the volume to make."""
        return volume_name(self.guest.name, self.image.image.new_format if self.image else "qcow2")

    @property
    def seed_volume_name(self) -> str:
        """The name of the seed volume to make."""
        return seed_volume_name(self.guest.name)


def attachable(conn: HostConnection, ref: VolumeRef, field: str) -> DiskSource:
    """The source of an existing volume in the format the request names, or Invalid naming the
    field at fault; its header is read only to refuse what would make QEMU open another file."""
    try:
        pool = volumes.get_pool(conn, ref.pool)
    except NotFound as exc:
        raise Invalid(
            f"{field}.pool: no storage pool '{ref.pool}' on this host", field=f"{field}.pool"
        ) from exc
    if not pool.active:
        raise Invalid(
            f"{field}.pool: storage pool '{ref.pool}' is not active", field=f"{field}.pool"
        )
    try:
        volume = volumes.get_volume(conn, ref.pool, ref.volume)
    except NotFound as exc:
        raise Invalid(
            f"{field}.volume: no volume '{ref.volume}' in pool '{ref.pool}'",
            field=f"{field}.volume",
        ) from exc
    if volume.kind not in ("file", "block"):
        raise Invalid(
            f"{field}.volume: a {volume.kind} volume cannot be attached", field=f"{field}.volume"
        )
    check_header(volumes.volume_header(conn, ref.pool, ref.volume), ref, field)
    return DiskSource(path=volume.path, kind=volume.kind, format=ref.format)


def check_header(header: ImageHeader, ref: VolumeRef, field: str) -> None:
    """Refuse a volume whose header disagrees with the format asked for, or names other files."""
    if header.names_other_files:
        what = "a backing file" if header.backing_file else "an external data file"
        raise Invalid(
            f"{field}.volume: '{ref.volume}' starts with a qcow2 header that names {what}, "
            "which QEMU would open on the host; such volumes are refused (read as raw it would "
            "be harmless, but it is most likely a guest's raw disk carrying a header that the "
            "guest wrote)",
            field=f"{field}.volume",
        )
    if header.qcow2 and ref.format != "qcow2":
        if field == "cdrom":
            raise Invalid(
                f"cdrom.volume: '{ref.volume}' is a qcow2 image, not boot media "
                "(a CD-ROM is attached read-only as raw)",
                field="cdrom.volume",
            )
        raise Invalid(
            f"{field}.format: '{ref.volume}' is a qcow2 image; give format qcow2 to attach it",
            field=f"{field}.format",
        )
    if ref.format == "qcow2" and not header.qcow2:
        raise Invalid(
            f"{field}.format: '{ref.volume}' is not a qcow2 image; attach it as raw",
            field=f"{field}.format",
        )


def usable_pool(conn: HostConnection, name: str, *, field: str) -> volumes.Pool:
    """The active directory pool that new volumes are to go to, or Invalid naming the field."""
    try:
        pool = volumes.get_pool(conn, name)
    except NotFound as exc:
        raise Invalid(f"{field}: no storage pool '{name}' on this host", field=field) from exc
    if not pool.active:
        raise Invalid(f"{field}: storage pool '{name}' is not active", field=field)
    if not pool.holds_qcow2:
        raise Invalid(
            f"{field}: new volumes need a directory pool (dir, fs or netfs); "
            f"'{name}' is {pool.type}",
            field=field,
        )
    return pool


def check_new_disk(conn: HostConnection, disk: NewDisk, volume_name: str) -> None:
    """Refuse, naming the field, a new volume its pool cannot take: a pool that is missing, not
    active or not a directory, too little free space, or the name taken there."""
    pool = usable_pool(conn, disk.pool, field="disk.pool")
    free_gib = pool.available / volumes.GIB
    if disk.size_gib * volumes.GIB > pool.available:
        raise Invalid(
            f"disk.size_gib: {disk.size_gib} GiB does not fit in pool '{disk.pool}' "
            f"({free_gib:.1f} GiB free)",
            field="disk.size_gib",
        )
    _check_volume_name(conn, disk.pool, volume_name)


def _image_disk(conn: HostConnection, image: BaseImage, disk: NewDisk) -> ImageDisk:
    """The base image, once it is safe to read and fits in the disk asked for."""
    source = attachable(conn, image.ref, "image")
    writer = devices.disk_users(conn, writers=True).get(source.path)
    if writer is not None:  # its bytes change under the copy, or under the overlay
        raise Conflict(
            f"image.volume: '{image.volume}' is a disk guest {writer} writes to; a base image "
            "must not change",
            field="image.volume",
        )
    volume = volumes.get_volume(conn, image.pool, image.volume)
    if disk.size_gib * volumes.GIB < volume.capacity:
        raise Invalid(
            f"disk.size_gib: the image '{image.volume}' is {volume.capacity / volumes.GIB:.2f} "
            "GiB; the disk made from it cannot be smaller",
            field="disk.size_gib",
        )
    if image.mode == "copy" and volume.format not in (None, image.format):
        raise Invalid(
            f"image.format: libvirt reads '{image.volume}' as {volume.format}, not "
            f"{image.format}, and would grow its copy as that; use mode overlay",
            field="image.format",
        )
    return ImageDisk(image=image, source=source)


def _check_volume_name(conn: HostConnection, pool: str, name: str) -> None:
    if volumes.volume_exists(conn, pool, name):
        raise Conflict(f"name: pool '{pool}' already has a volume '{name}'", field="name")


def existing_network(conn: HostConnection, name: str) -> networks.Network:
    """The host's network of this name, or Invalid naming the field `network`."""
    try:
        return networks.get_network(conn, name)
    except NotFound as exc:
        raise Invalid(f"network: no network '{name}' on this host", field="network") from exc


def check_network(conn: HostConnection, name: str, *, start: bool) -> None:
    """Invalid naming `network` unless the host has it, and has it active for a guest that is
    to start now."""
    network = existing_network(conn, name)
    if start and not network.active:
        raise Invalid(
            f"network: network '{name}' is not active, so the guest could not start; "
            "start the network or create the guest without starting it",
            field="network",
        )


def _cpu(
    conn: HostConnection,
    request: CreateRequest,
    *,
    platform: build.Platform,
    known: CpuProbe | None,
) -> CpuConfig:
    """The guest's CPU: the probe's answer, or the mode asked for with the host's limits."""
    if request.cpu_mode is not None and request.cpu_mode not in platform.cpu_modes:
        raise Invalid(
            f"cpu_mode: this host offers {', '.join(platform.cpu_modes)}", field="cpu_mode"
        )
    if request.cpu_mode == "custom" and request.cpu_model not in platform.cpu_models:
        raise Invalid(
            f"cpu_model: '{request.cpu_model}' is not a CPU model this host can run",
            field="cpu_model",
        )
    found = cpu_probe(conn, platform, known=known)
    if request.cpu_mode is None:
        return found.config
    return CpuConfig(request.cpu_mode, request.cpu_model).with_host_limits(found.config.disabled)


def check_on_host(
    conn: HostConnection,
    request: CreateRequest,
    host_id: int,
    *,
    known_cpu: CpuProbe | None = None,
) -> CreatePlan:
    """Check the request against the host itself and plan the guest (runs on its connection).

    known_cpu is the CPU probe stored with the host, taken when still current."""
    if domains.name_taken(conn, request.name):
        raise Conflict(
            f"name: a guest called '{request.name}' already exists on this host", field="name"
        )
    platform = build.host_platform(conn)
    if platform.max_vcpus and request.vcpus > platform.max_vcpus:
        raise Invalid(
            f"vcpus: this host's hypervisor allows at most {platform.max_vcpus} per guest",
            field="vcpus",
        )
    if request.firmware not in platform.firmware:
        raise Invalid("firmware: this host offers no UEFI firmware", field="firmware")
    new_disk = request.disk if isinstance(request.disk, NewDisk) else None
    image = request.image
    if new_disk is not None:
        new_format = image.new_format if image is not None else "qcow2"
        check_new_disk(conn, new_disk, volume_name(request.name, new_format))
    image_disk = _image_disk(conn, image, new_disk) if image and new_disk else None
    if request.cloud_init is not None and new_disk is not None:
        _check_volume_name(conn, new_disk.pool, seed_volume_name(request.name))
    disk = request.disk if isinstance(request.disk, VolumeRef) else None
    if request.network is not None:
        check_network(conn, request.network, start=request.start)
    guest = GuestPlan(
        uuid=str(uuid_lib.uuid4()),
        name=request.name,
        vcpus=request.vcpus,
        memory_mib=request.memory_mib,
        platform=platform,
        firmware=request.firmware,
        disk=attachable(conn, disk, "disk") if disk is not None else None,
        cdrom=attachable(conn, request.cdrom, "cdrom") if request.cdrom is not None else None,
        network=request.network,
        cpu=_cpu(conn, request, platform=platform, known=known_cpu),
    )
    return CreatePlan(
        host_id=host_id, guest=guest, new_disk=new_disk, start=request.start, image=image_disk
    )
