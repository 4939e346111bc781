"""POST /api/v1/guests/{uuid}/clone: copy a guest into a new one, as a job."""

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import JobOut
from app.deps import JobsDep, SessionDep, SessionsDep, SettingsDep, SyncDep, needs
from app.models.audit import audit_target
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_clone import start_clone

router = APIRouter(prefix="/guests", tags=["guests"])


class CloneIn(BaseModel):
    """The clone's name, and the storage pool its disks are copied into."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, examples=["web-3"])
    pool: str = Field(
        max_length=255,
        examples=["default"],
        description="an active directory pool of the guest's host with room for the copies",
    )


@router.post(
    "/{uuid:guest}/clone",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {"description": "a job is copying the disks; its result names the new guest"},
        409: {
            "description": "busy, not running or shut off, a disk that cannot be copied, or "
            "the name (or a volume of that name) taken on the host; `field` names it"
        },
        422: {"description": "the name breaks the rule, or the pool is unusable or too full"},
        503: {"description": "the host is not connected"},
    },
)
def clone_guest(
    request: Request,
    response: Response,
    uuid: str,
    body: CloneIn,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.clone")],
) -> JobOut:
    """Clone the guest (shut off, or running through a point-in-time copy) with a new name,
    UUID and MACs, each of its disks copied into a new volume of the pool; 202 with the job."""
    request.state.audit_target = audit_target(
        "guest", uuid, guest_service.get_guest(session, uuid).name
    )
    job = start_clone(
        sessions, sync, jobs, settings, uuid=uuid, name=body.name, pool=body.pool,
        principal=principal,
    )  # fmt: skip
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.model_validate(job)
