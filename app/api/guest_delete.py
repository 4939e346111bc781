"""DELETE /api/v1/guests/{uuid} and the disks a delete would remove."""

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from app.deps import SessionsDep, SyncDep, guard
from app.models.audit import audit_target
from app.services import guest_delete
from app.services.auth import Permission

router = APIRouter(prefix="/guests", tags=["guests"])


class KeptVolume(BaseModel):
    """A disk left on the host, and why."""

    path: str
    reason: str


def _kept(kept: tuple[guest_delete.KeptDisk, ...]) -> list[KeptVolume]:
    """The kept disks as the API shows them."""
    return [KeptVolume(path=k.path, reason=k.reason) for k in kept]


class GuestDeleted(BaseModel):
    """What deleting a guest removed and kept."""

    uuid: str
    name: str
    removed_volumes: list[str]
    kept_volumes: list[KeptVolume]


class DisksOwned(BaseModel):
    """What deleting the guest with remove_storage=true would remove and keep."""

    uuid: str
    name: str
    removable_volumes: list[str]
    kept_volumes: list[KeptVolume]


@router.delete(
    "/{uuid:guest}",
    response_model=GuestDeleted,
    dependencies=guard(Permission.ADMIN, "guest.delete"),
    responses={
        404: {"description": "no such guest, or it is already gone"},
        409: {"description": "the guest is running (and force was not asked), or busy"},
        503: {"description": "the guest's host is not connected"},
    },
)
def delete_guest(
    request: Request,
    uuid: str,
    sessions: SessionsDep,
    sync: SyncDep,
    remove_storage: bool = Query(False, description="also remove the volumes only it uses"),
    force: bool = Query(False, description="force a running guest off first"),
) -> GuestDeleted:
    """Undefine a guest (with snapshot and checkpoint metadata and NVRAM), and its disks."""
    deletion = guest_delete.delete_guest(
        sessions, sync, uuid=uuid, remove_storage=remove_storage, force=force
    )
    request.state.audit_target = audit_target("guest", deletion.uuid, deletion.name)
    return GuestDeleted(
        uuid=deletion.uuid,
        name=deletion.name,
        removed_volumes=list(deletion.removed),
        kept_volumes=_kept(deletion.kept),
    )


@router.get(
    "/{uuid:guest}/disks-owned",
    response_model=DisksOwned,
    dependencies=guard(Permission.ADMIN),
    responses={503: {"description": "the guest's host is not connected"}},
)
def disks_owned(uuid: str, sessions: SessionsDep, sync: SyncDep) -> DisksOwned:
    """The disks a delete with remove_storage=true would remove, and those it would keep."""
    guest, plan = guest_delete.disks_owned(sessions, sync, uuid)
    return DisksOwned(
        uuid=guest.uuid,
        name=guest.name,
        removable_volumes=list(plan.remove),
        kept_volumes=_kept(plan.keep),
    )
