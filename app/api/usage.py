"""GET /api/v1/guests/{uuid}/usage: what a guest used over the last day or 30 days; and
.../addresses: its IP addresses, asked of its host now."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.schemas import AddressOut
from app.deps import SessionDep, SyncDep, guard
from app.models.base import utcnow
from app.services import addresses as address_service
from app.services import usage as usage_service
from app.services.auth import Permission

router = APIRouter(prefix="/guests", tags=["guests"])


class UsageSampleOut(BaseModel):
    """What the guest used over a reading's interval, or on average over an hour."""

    at: datetime = Field(description="the reading's time, or the hour's start")
    cpu_percent: float = Field(description="CPU time as a share of its vCPUs")
    memory_used_kib: int | None
    disk_bps: int = Field(description="bytes a second its disks read and wrote")
    net_bps: int = Field(description="bytes a second its interfaces received and sent")


@router.get(
    "/{uuid:guest}/usage",
    response_model=list[UsageSampleOut],
    dependencies=guard(Permission.VIEW),
)
def guest_usage(uuid: str, session: SessionDep, period: str = "day") -> list[UsageSampleOut]:
    """The guest's samples, oldest first: period day (each reading of the last 24 hours) or
    month (each hour of the last 30 days)."""
    samples = usage_service.history(session, uuid, period=period, now=utcnow())
    return [UsageSampleOut.model_validate(s, from_attributes=True) for s in samples]


@router.get(
    "/{uuid:guest}/addresses",
    response_model=list[AddressOut],
    dependencies=guard(Permission.VIEW),
)
def guest_addresses(uuid: str, session: SessionDep, sync: SyncDep) -> list[AddressOut]:
    """The running guest's addresses (none when it is not running); 503 when its host is not
    connected."""
    return [
        AddressOut.model_validate(a, from_attributes=True)
        for a in address_service.addresses(session, sync, uuid)
    ]
