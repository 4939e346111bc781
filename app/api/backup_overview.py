"""GET /api/v1/backups/overview: every guest's last successful backup, how its last ended and
its next scheduled run."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.deps import SessionDep, SettingsDep, guard
from app.errors import Invalid
from app.services.auth import Permission
from app.services.backups import overview as overview_service
from app.services.backups.digests import ALGORITHMS, backup_hash

router = APIRouter(tags=["backups"])


class GuestBackupsOut(BaseModel):
    """One present guest and its backups at a glance."""

    uuid: str
    name: str
    host_name: str
    last_success_id: int | None = Field(description="its newest succeeded backup")
    last_success_at: datetime | None = Field(description="when that backup finished")
    last_id: int | None = Field(description="its newest finished backup, whatever its status")
    last_status: str | None = Field(description="succeeded, failed, cancelled or corrupt")
    last_error: str | None
    last_failed: bool = Field(description="the newest finished backup failed or is corrupt")
    next_run_at: datetime | None = Field(
        description="its next scheduled backup (UTC, jitter included); null: no schedule covers it"
    )
    next_run_schedule: str | None = Field(description="the schedule of that run")


class Totals(BaseModel):
    """Present guests, those with no successful backup, those whose last backup failed."""

    guests: int
    no_backup: int
    last_failed: int


class BackupHash(BaseModel):
    """The digest new backups' files get from this instance, and why."""

    algorithm: str = Field(description=f"one of {', '.join(ALGORITHMS)}")
    reason: str = Field(description="VIRTDECK_BACKUP_HASH, or what auto found in the CPU")


class BackupOverview(BaseModel):
    """One page of guests by name, the totals over all of them, and the hash new backups use."""

    items: list[GuestBackupsOut]
    total: int
    limit: int
    offset: int
    totals: Totals
    hash: BackupHash


@router.get(
    "/backups/overview",
    response_model=BackupOverview,
    dependencies=guard(Permission.VIEW),
    responses={422: {"description": "a field is not acceptable; `field` names it"}},
)
def backup_overview(
    session: SessionDep,
    settings: SettingsDep,
    show: Annotated[str | None, Query(description="none or failed: only those guests")] = None,
    limit: Annotated[int, Query()] = 100,
    offset: Annotated[int, Query()] = 0,
) -> BackupOverview:
    """Present guests by name with their last successful backup, how their last one ended and
    their next scheduled run."""
    if show is not None and show not in overview_service.SHOWS:
        raise Invalid(f"show: one of {', '.join(overview_service.SHOWS)}", field="show")
    rows, total, totals = overview_service.overview(session, show=show, limit=limit, offset=offset)
    return BackupOverview(
        items=[GuestBackupsOut(**vars(row), last_failed=row.last_failed) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
        totals=Totals(**vars(totals)),
        hash=BackupHash(**vars(backup_hash(settings))),
    )
