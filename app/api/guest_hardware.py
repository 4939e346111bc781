"""/api/v1/guests/{uuid}/hardware, /disks, /nics and /media: a guest's disks, drives and NICs
read from its host, and their changes (add, detach, grow a disk; attach, detach a NIC; insert
or eject a CD-ROM's image), live where the guest runs."""

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.guest_create import LONG, DiskIn, VolumeIn
from app.api.schemas import GuestOut
from app.deps import SessionDep, SessionsDep, SyncDep, guard
from app.models.audit import audit_target
from app.services import guest_hardware
from app.services import guests as guest_service
from app.services.auth import Permission
from app.services.guest_create import VolumeRef, disk_choice

router = APIRouter(prefix="/guests", tags=["guests"])
REFUSALS = {
    404: {"description": "no such guest, disk or NIC"},
    409: {"description": "busy, or the change clashes with the host (a MAC or volume in use)"},
    422: {"description": "a value not acceptable; `field` names it"},
    503: {"description": "the host is not connected"},
}


class DiskOut(BaseModel):
    """A disk or drive; sizes in bytes, None where no pool knows the image."""

    model_config = ConfigDict(from_attributes=True)

    target: str
    device: str = Field(description="disk, cdrom, floppy or lun")
    bus: str | None
    source: str | None = Field(description="the image's host path; None for an empty drive")
    format: str | None = Field(description="the format it is attached as")
    pool: str | None
    volume: str | None
    capacity: int | None
    allocation: int | None = Field(description="bytes the image takes on the host (its use)")
    readonly: bool


class NicOut(BaseModel):
    """A network interface."""

    model_config = ConfigDict(from_attributes=True)

    mac: str
    type: str = Field(description="network, bridge, user, direct, ...")
    source: str | None
    model: str | None


class HardwareOut(BaseModel):
    """A guest's disks, drives and NICs as it has them now."""

    model_config = ConfigDict(from_attributes=True)

    running: bool
    disks: list[DiskOut]
    nics: list[NicOut]


class ChangeOut(BaseModel):
    """The guest after a hardware change, and where it took effect."""

    guest: GuestOut
    live: bool = Field(description="changed in the running guest too (else in its config)")
    pending: bool = Field(
        description="a detach the running guest has not completed yet; its config no longer has "
        "the device, so it is gone at next start"
    )
    target: str | None = None
    mac: str | None = None
    volume: str | None = None


def _out(request: Request, changed: guest_hardware.Changed) -> ChangeOut:
    guest = changed.guest
    request.state.audit_target = audit_target("guest", guest.uuid, guest.name)
    return ChangeOut(
        guest=GuestOut.of(guest),
        live=changed.live,
        pending=changed.pending,
        target=changed.target,
        mac=changed.mac,
        volume=changed.volume,
    )


@router.get(
    "/{uuid:guest}/hardware", response_model=HardwareOut, dependencies=guard(Permission.VIEW)
)
def hardware(uuid: str, session: SessionDep, sync: SyncDep) -> guest_hardware.Hardware:
    """The guest's disks (with pool, format, size and use), drives and NICs, read from its host."""
    return guest_hardware.hardware(sync, guest_service.get_guest(session, uuid))


class DiskAdd(BaseModel):
    """The disk to add: a new qcow2 volume (pool and size_gib) or an existing volume."""

    model_config = ConfigDict(extra="forbid")

    disk: DiskIn


@router.post(
    "/{uuid:guest}/disks",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.disk.add"),
)
def add_disk(
    request: Request, uuid: str, body: DiskAdd, sessions: SessionsDep, sync: SyncDep
) -> ChangeOut:
    """Add a disk as the next virtio target: a new volume, or an existing one in the format
    given (a qcow2 header naming another file is refused); live where the guest runs."""
    disk = disk_choice(
        body.disk.pool, body.disk.size_gib, body.disk.volume, format_=body.disk.format
    )
    return _out(request, guest_hardware.add_disk(sessions, sync, uuid=uuid, disk=disk))


@router.delete(
    "/{uuid:guest}/disks/{target:word}",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.disk.detach"),
)
def detach_disk(request: Request, uuid: str, target: str, sessions: SessionsDep, sync: SyncDep):
    """Detach a disk or drive (live and from the config); its volume is kept."""
    return _out(request, guest_hardware.detach_disk(sessions, sync, uuid=uuid, target=target))


class Grow(BaseModel):
    """The disk's new size."""

    model_config = ConfigDict(extra="forbid")

    size_gib: int = Field(description="larger than the disk is now: disks never shrink")


@router.post(
    "/{uuid:guest}/disks/{target:word}/grow",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.disk.grow"),
)
def grow_disk(
    request: Request, uuid: str, target: str, body: Grow, sessions: SessionsDep, sync: SyncDep
) -> ChangeOut:
    """Grow a disk: block resize in the running guest, else its volume; never shrinks."""
    changed = guest_hardware.grow_disk(
        sessions, sync, uuid=uuid, target=target, size_gib=body.size_gib
    )
    return _out(request, changed)


class NicIn(BaseModel):
    """A NIC on a libvirt network or a host bridge."""

    model_config = ConfigDict(extra="forbid")

    network: str | None = Field(None, max_length=LONG, description="a libvirt network, or")
    bridge: str | None = Field(None, max_length=LONG, description="a host bridge, e.g. br0")
    mac: str | None = Field(None, max_length=64, description="leave out for a new one")
    model: str = Field("virtio", max_length=32, description="virtio, e1000e, e1000 or rtl8139")


@router.post(
    "/{uuid:guest}/nics",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.nic.attach"),
)
def attach_nic(
    request: Request, uuid: str, body: NicIn, sessions: SessionsDep, sync: SyncDep
) -> ChangeOut:
    """Attach a NIC (network or bridge, a given MAC free on the host or a new one); live where
    the guest runs."""
    changed = guest_hardware.attach_nic(
        sessions,
        sync,
        uuid=uuid,
        network=body.network,
        bridge=body.bridge,
        mac=body.mac,
        model=body.model,
    )
    return _out(request, changed)


@router.delete(
    "/{uuid:guest}/nics/{mac:label}",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.nic.detach"),
)
def detach_nic(request: Request, uuid: str, mac: str, sessions: SessionsDep, sync: SyncDep):
    """Detach the NIC with this MAC (live and from the config)."""
    return _out(request, guest_hardware.detach_nic(sessions, sync, uuid=uuid, mac=mac))


class MediaIn(BaseModel):
    """The ISO volume to put into the drive."""

    model_config = ConfigDict(extra="forbid")

    cdrom: VolumeIn


@router.put(
    "/{uuid:guest}/media/{target:word}",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.media.change"),
)
def change_media(
    request: Request, uuid: str, target: str, body: MediaIn, sessions: SessionsDep, sync: SyncDep
) -> ChangeOut:
    """Insert an ISO volume into a CD-ROM drive, replacing what is in it (read-only, raw)."""
    cdrom = VolumeRef(body.cdrom.pool, body.cdrom.volume)
    changed = guest_hardware.change_media(sessions, sync, uuid=uuid, target=target, cdrom=cdrom)
    return _out(request, changed)


@router.delete(
    "/{uuid:guest}/media/{target:word}",
    response_model=ChangeOut,
    responses=REFUSALS,
    dependencies=guard(Permission.OPERATE, "guest.media.eject"),
)
def eject_media(request: Request, uuid: str, target: str, sessions: SessionsDep, sync: SyncDep):
    """Eject the image from a CD-ROM drive."""
    changed = guest_hardware.change_media(sessions, sync, uuid=uuid, target=target, cdrom=None)
    return _out(request, changed)
