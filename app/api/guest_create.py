"""POST /api/v1/guests, and the pools, volumes and networks of a host."""

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import GuestDetail, GuestOut, JobOut
from app.deps import JobsDep, RowId, SessionDep, SessionsDep, SyncDep, guard, needs
from app.models import Guest
from app.models.audit import audit_target
from app.services import guest_create, host_storage
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


def _guest_detail(guest: Guest) -> GuestDetail:
    return GuestDetail(**GuestOut.of(guest).model_dump(), domain_xml=guest.domain_xml)


@router.post(
    "/guests",
    response_model=GuestDetail | JobOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"model": GuestDetail, "description": "created (nothing had to be allocated)"},
        202: {"model": JobOut, "description": "a job is making the new volume and the guest"},
        403: {"description": "force asked by someone who is not an admin"},
        409: {"description": "the name is taken on the host"},
        422: {"description": "a field is not acceptable; `field` names it"},
        503: {"description": "the host is not connected"},
    },
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
    request.state.audit_target = audit_target(
        "host", body.host_id
    )  # until there is a guest to name
    created = guest_create.create_guest(
        session,
        request=body.request(),
        principal=principal,
        sync=sync,
        jobs=jobs,
        sessions=sessions,
    )
    if created.job is not None:
        request.state.audit_target = audit_target("guest", created.job.guest_uuid, body.name)
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"/api/v1/jobs/{created.job.id}"
        return JobOut.model_validate(created.job)
    guest = created.guest
    request.state.audit_target = audit_target("guest", guest.uuid, guest.name)
    response.headers["Location"] = f"/api/v1/guests/{guest.uuid}"
    return _guest_detail(guest)


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
