"""POST /api/v1/guests (also from a base image with cloud-init, or from a saved profile), and
the pools, volumes and networks of a host."""

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import GuestDetail, JobOut
from app.deps import JobsDep, RowId, SessionDep, SessionsDep, SyncDep, guard, needs
from app.models.audit import audit_target
from app.services import audit, guest_create, host_storage, profiles
from app.services.auth import Permission, Principal

router = APIRouter(tags=["create"])
LONG = 1024  # longer strings are refused before they reach the checks


class DiskIn(BaseModel):
    """A new volume (pool and size_gib) or an existing one (pool and volume)."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(max_length=LONG)
    size_gib: int | None = Field(None, description="make a new qcow2 volume of this many GiB")
    volume: str | None = Field(None, max_length=LONG, description="or attach this volume")
    format: str | None = Field(
        None,
        max_length=LONG,
        description="the existing volume's format: raw (the default) or qcow2; virtdeck never "
        "takes it from the volume's header, and refuses a qcow2 header naming another file",
    )


class VolumeIn(BaseModel):
    """An existing volume of a storage pool, attached read-only as raw."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(max_length=LONG)
    volume: str = Field(max_length=LONG)


class ImageIn(BaseModel):
    """The base image a new disk is made from (give the disk's pool and size_gib)."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(max_length=LONG)
    volume: str = Field(max_length=LONG, examples=["debian-12-genericcloud-amd64.qcow2"])
    format: str = Field(
        "qcow2",
        max_length=LONG,
        description="the image's format, raw or qcow2: never taken from its header; an image "
        "whose qcow2 header names a backing or data file is refused",
    )
    mode: str = Field(
        "copy",
        max_length=LONG,
        description="copy: the disk is a copy of the image grown to size_gib; overlay: a qcow2 "
        "volume of size_gib backed by the image (which must then stay)",
    )

    def image(self) -> guest_create.BaseImage:
        """The service's base image."""
        return guest_create.BaseImage(self.pool, self.volume, self.format, self.mode)


class CloudInitIn(BaseModel):
    """What cloud-init sets up: virtdeck writes a NoCloud seed ISO next to the disk and attaches
    it read-only. Only a SHA-512 crypt hash of the password goes into the seed."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(max_length=LONG, examples=["debian"], description="made with sudo rights")
    password: str | None = Field(None, max_length=LONG, description="or ssh_keys, or both")
    ssh_keys: list[str] = Field(
        [], max_length=64, description="OpenSSH public key lines for the user"
    )
    hostname: str | None = Field(None, max_length=LONG, description="default: the guest's name")
    user_data: str | None = Field(
        None,
        max_length=128 * 1024,
        description="more user-data (#cloud-config or a #! script, up to 64 KiB), applied after "
        "virtdeck's",
    )

    def cloud_init(self) -> guest_create.CloudInit:
        """The service's cloud-init request."""
        return guest_create.CloudInit(
            user=self.user,
            password=self.password,
            ssh_keys=tuple(self.ssh_keys),
            hostname=self.hostname,
            user_data=self.user_data,
        )


class GuestCreate(BaseModel):
    """A guest to create."""

    model_config = ConfigDict(extra="forbid")

    host_id: RowId
    name: str = Field(max_length=LONG, examples=["web-3"])
    vcpus: int = Field(examples=[2])
    memory_mib: int = Field(examples=[2048])
    disk: DiskIn | None = Field(None, description="none: a guest without a disk")
    cdrom: VolumeIn | None = Field(None, description="boot media, e.g. an ISO volume")
    network: str | None = Field(None, max_length=LONG, description="a libvirt network")
    image: ImageIn | None = Field(None, description="make the new disk from this base image")
    cloud_init: CloudInitIn | None = Field(
        None, description="seed the guest made from a cloud image with cloud-init"
    )
    firmware: str = Field("bios", description="bios, or uefi where the host offers it")
    cpu_mode: str | None = Field(
        None,
        max_length=32,
        description="host-passthrough, host-model, custom (with cpu_model) or default (the "
        "hypervisor's CPU); leave it out for what the host's CPU probe found QEMU starts",
    )
    cpu_model: str | None = Field(
        None, max_length=LONG, description="a named CPU model, with cpu_mode custom"
    )
    start: bool = Field(False, description="start the guest once it is defined")
    force: bool = Field(
        False,
        description="allow more vCPUs than host CPUs, or over the overcommit policy (admins only)",
    )

    def request(self) -> guest_create.CreateRequest:
        """The service's request for this body."""
        disk = self.disk
        return guest_create.CreateRequest(
            host_id=self.host_id,
            name=self.name,
            vcpus=self.vcpus,
            memory_mib=self.memory_mib,
            disk=guest_create.disk_choice(
                disk.pool, disk.size_gib, disk.volume, format_=disk.format
            )
            if disk
            else None,
            cdrom=guest_create.VolumeRef(self.cdrom.pool, self.cdrom.volume)
            if self.cdrom
            else None,
            network=self.network,
            image=self.image.image() if self.image else None,
            cloud_init=self.cloud_init.cloud_init() if self.cloud_init else None,
            firmware=self.firmware,
            cpu_mode=self.cpu_mode,
            cpu_model=self.cpu_model,
            start=self.start,
            force=self.force,
        )


class VolumeOut(BaseModel):
    """A storage volume; sizes in bytes."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    pool: str
    path: str
    kind: str = Field(description="file, block, dir, network, netdir or other")
    format: str | None
    capacity: int
    allocation: int
    iso: bool


class FromProfileIn(BaseModel):
    """A guest to create from a saved profile: its name, and what a profile does not keep."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=LONG, examples=["web-4"])
    host_id: RowId | None = Field(None, description="required when the profile names no host")
    password: str | None = Field(None, max_length=LONG, description="the cloud-init user's")
    hostname: str | None = Field(None, max_length=LONG, description="default: the guest's name")
    user_data: str | None = Field(None, max_length=128 * 1024, description="as for a create")
    start: bool = False
    force: bool = Field(False, description="as for a create (admins only)")

    def given(self) -> profiles.FromProfile:
        """The service's additions to the profile."""
        return profiles.FromProfile(**self.model_dump())


def _answer(
    request: Request, response: Response, created: guest_create.Created, name: str
) -> GuestDetail | JobOut:
    """201 with the guest, or 202 with the job making it; the audit row names the guest."""
    if created.job is not None:
        request.state.audit_target = audit_target("guest", created.job.guest_uuid, name)
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"/api/v1/jobs/{created.job.id}"
        return JobOut.model_validate(created.job)
    guest = created.guest
    request.state.audit_target = audit_target("guest", guest.uuid, guest.name)
    response.headers["Location"] = f"/api/v1/guests/{guest.uuid}"
    return GuestDetail.of(guest)


CREATED = {
    201: {"model": GuestDetail, "description": "created (nothing had to be allocated)"},
    202: {"model": JobOut, "description": "a job is making the new volumes and the guest"},
    403: {"description": "force asked by someone who is not an admin"},
    409: {"description": "the name is taken on the host"},
    422: {"description": "a field is not acceptable; `field` names it"},
    503: {"description": "the host is not connected"},
}


@router.post(
    "/guests",
    response_model=GuestDetail | JobOut,
    status_code=status.HTTP_201_CREATED,
    responses=CREATED,
)
def create_guest(
    request: Request,
    response: Response,
    body: GuestCreate,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.create")],
) -> GuestDetail | JobOut:
    """Create a guest: 201 with it, or 202 with the job when a new volume must be made."""
    # The host, until there is a guest to name.
    request.state.audit_target = audit.named(session, "host", body.host_id)
    created = guest_create.create_guest(
        session,
        request=body.request(),
        principal=principal,
        sync=sync,
        jobs=jobs,
        sessions=sessions,
    )
    return _answer(request, response, created, body.name)


@router.post(
    "/profiles/{profile_id:id}/guests",
    response_model=GuestDetail | JobOut,
    status_code=status.HTTP_201_CREATED,
    responses={**CREATED, 404: {"description": "no such profile"}},
)
def create_from_profile(
    request: Request,
    response: Response,
    profile_id: int,
    body: FromProfileIn,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.create")],
) -> GuestDetail | JobOut:
    """Create a guest from a saved profile; a pool, image or network it names that is gone is
    refused (422) naming the field, as for a create."""
    request.state.audit_target = audit_target("profile", profile_id)
    profile = profiles.get_profile(session, profile_id)
    request.state.audit_target = audit_target("profile", profile.id, profile.name)
    created = guest_create.create_guest(
        session,
        request=profiles.profile_request(profile, body.given()),
        principal=principal,
        sync=sync,
        jobs=jobs,
        sessions=sessions,
    )
    return _answer(request, response, created, body.name)


@router.get(
    "/hosts/{host_id:id}/pools",
    response_model=list[host_storage.Pool],
    dependencies=guard(Permission.VIEW),
)
def list_pools(host_id: int, session: SessionDep, sync: SyncDep) -> list[host_storage.Pool]:
    """The host's storage pools, read from it now (503 when it is not connected)."""
    return host_storage.pools(session, sync, host_id)


@router.get(
    "/hosts/{host_id:id}/pools/{pool:label}/volumes",
    response_model=list[VolumeOut],
    dependencies=guard(Permission.VIEW),
)
def list_volumes(
    host_id: int, pool: str, session: SessionDep, sync: SyncDep
) -> list[host_storage.Volume]:
    """The volumes of one of the host's active pools, read from it now."""
    return host_storage.volumes(session, sync, host_id=host_id, pool=pool)


@router.get(
    "/hosts/{host_id:id}/networks",
    response_model=list[host_storage.Network],
    dependencies=guard(Permission.VIEW),
)
def list_networks(host_id: int, session: SessionDep, sync: SyncDep) -> list[host_storage.Network]:
    """The host's virtual networks, read from it now."""
    return host_storage.networks(session, sync, host_id)
