"""/api/v1/backup-schedules: backup schedules with their retention policy (admins change them,
since retention removes backups), their latest runs, and the preview of what a policy would
remove."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field

from app.deps import RowId, SessionDep, guard, needs
from app.models import BackupSchedule, ScheduleRun
from app.models.audit import audit_target
from app.models.base import utcnow
from app.services.auth import Permission, Principal
from app.services.backups import schedules
from app.services.backups.retention import KEEPS, Policy

router = APIRouter(prefix="/backup-schedules", tags=["backup schedules"])
REFUSED = {
    404: {"description": "no such schedule"},
    409: {"description": "the name is taken"},
    422: {"description": "a field is not acceptable (bad time, unknown guest or host, a negative "
          "keep count); `field` names it"},
}  # fmt: skip


class KeepCounts(BaseModel):
    """The retention policy: how many backups each rule keeps (0: the rule is off)."""

    keep_last: int = Field(0, description="the newest N")
    keep_daily: int = Field(0, description="the newest of each of the last N days with one")
    keep_weekly: int = Field(0, description="the newest of each of the last N ISO weeks")
    keep_monthly: int = Field(0, description="the newest of each of the last N months")


class ScheduleIn(KeepCounts):
    """A schedule: which guests, when (UTC), how many at once per host, and what to keep."""

    name: str = Field(max_length=64, examples=["nightly"])
    enabled: bool = True
    scope: str = Field(examples=["host"], description="guest, host or all")
    guest_uuid: str | None = Field(None, max_length=36, description="the guest (scope guest)")
    host_id: RowId | None = Field(None, description="the host (scope host)")
    frequency: str = Field(examples=["daily"], description="daily or weekly")
    weekday: int | None = Field(None, description="0 (Monday) to 6 (Sunday), weekly only")
    time: str = Field(max_length=8, examples=["02:30"], description="HH:MM or HH:MM:SS, UTC")
    jitter_minutes: int = Field(0, description="each guest starts at a fixed offset within this")
    max_parallel: int = Field(1, description="at most this many backups at once per host")

    def asked(self) -> schedules.ScheduleIn:
        """What the service checks."""
        return schedules.ScheduleIn(**self.model_dump())


class RunOut(BaseModel):
    """One guest's backup for one slot of a schedule."""

    slot: datetime
    due_at: datetime = Field(description="the slot plus the guest's jitter")
    guest_uuid: str
    guest_name: str
    status: str = Field(description="pending (due or waiting for room), starting, started, failed")
    backup_id: int | None
    error: str | None
    started_at: datetime | None

    @classmethod
    def of(cls, run: ScheduleRun) -> "RunOut":
        """The run's fields."""
        return cls(
            slot=run.slot,
            due_at=run.due_at,
            guest_uuid=run.guest_uuid,
            guest_name=run.guest_name,
            status=run.status,
            backup_id=run.backup_id,
            error=run.error,
            started_at=run.started_at,
        )


class ScheduleOut(ScheduleIn):
    """A saved schedule, its next slot and latest runs."""

    id: int
    next_run: datetime | None = Field(description="the next slot (before jitter); None if off")
    last_slot: datetime | None
    created_by: str | None
    runs: list[RunOut] = Field(description="the latest runs, newest slot first")

    @classmethod
    def of(cls, schedule: BackupSchedule, runs: list[ScheduleRun]) -> "ScheduleOut":
        """The schedule as the API shows it."""
        return cls(
            id=schedule.id,
            name=schedule.name,
            enabled=schedule.enabled,
            scope=schedule.scope,
            guest_uuid=schedule.guest_uuid,
            host_id=schedule.host_id,
            frequency=schedule.frequency,
            weekday=schedule.weekday,
            time=schedules.format_time(schedule.at_seconds),
            jitter_minutes=schedule.jitter_minutes,
            max_parallel=schedule.max_parallel,
            keep_last=schedule.keep_last,
            keep_daily=schedule.keep_daily,
            keep_weekly=schedule.keep_weekly,
            keep_monthly=schedule.keep_monthly,
            next_run=schedules.next_slot(schedule, utcnow()) if schedule.enabled else None,
            last_slot=schedule.last_slot,
            created_by=schedule.created_by,
            runs=[RunOut.of(r) for r in runs],
        )


class PreviewQuery(KeepCounts):
    """A scope and a policy to try on the backups there are now."""

    scope: str = "all"
    guest_uuid: str | None = Field(None, max_length=36)
    host_id: RowId | None = None


class Judged(BaseModel):
    """One backup and what the policy does with it."""

    backup_id: int
    started_at: datetime
    status: str
    keep: bool
    reason: str = Field(
        description="the rule that keeps it (last, daily, weekly, monthly), or why it goes"
    )


class GuestPreview(BaseModel):
    """A guest's backups under the policy."""

    guest_uuid: str
    guest_name: str
    kept: list[Judged]
    removed: list[Judged]


class PreviewOut(BaseModel):
    """What the policy would remove (and keep) if it applied now."""

    removed_count: int
    guests: list[GuestPreview]


def _saved(session: SessionDep, schedule: BackupSchedule) -> ScheduleOut:
    return ScheduleOut.of(schedule, schedules.recent_runs(session, schedule.id))


@router.get("", response_model=list[ScheduleOut], dependencies=guard(Permission.VIEW))
def list_schedules(session: SessionDep) -> list[ScheduleOut]:
    """Every schedule, by name."""
    return [_saved(session, s) for s in schedules.list_schedules(session)]


@router.get(
    "/preview", response_model=PreviewOut, responses=REFUSED, dependencies=guard(Permission.VIEW)
)
def preview(session: SessionDep, query: Annotated[PreviewQuery, Depends()]) -> PreviewOut:
    """What this retention policy would remove from the guests of this scope, now."""
    policy = Policy.checked(**{name: getattr(query, name) for name in KEEPS})
    scope = schedules.Scope(query.scope, guest_uuid=query.guest_uuid, host_id=query.host_id)
    guests = []
    for guest, verdicts in schedules.preview(session, scope, policy):
        judged = [
            Judged(backup_id=v.backup.id, started_at=v.backup.started_at,
                   status=v.backup.status, keep=v.keep, reason=v.reason)
            for v in verdicts
        ]  # fmt: skip
        guests.append(
            GuestPreview(
                guest_uuid=guest.uuid,
                guest_name=guest.name,
                kept=[j for j in judged if j.keep],
                removed=[j for j in judged if not j.keep],
            )
        )
    return PreviewOut(removed_count=sum(len(g.removed) for g in guests), guests=guests)


@router.get(
    "/{schedule_id:id}",
    response_model=ScheduleOut,
    responses=REFUSED,
    dependencies=guard(Permission.VIEW),
)
def get_schedule(schedule_id: int, session: SessionDep) -> ScheduleOut:
    """One schedule with its latest runs."""
    return _saved(session, schedules.get_schedule(session, schedule_id))


@router.post("", response_model=ScheduleOut, status_code=status.HTTP_201_CREATED, responses=REFUSED)
def create_schedule(
    request: Request,
    body: ScheduleIn,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.ADMIN, "backup_schedule.create")],
) -> ScheduleOut:
    """A new schedule; its first run is its next slot to come (none is caught up)."""
    schedule = schedules.create_schedule(session, body.asked(), created_by=principal.username)
    request.state.audit_target = audit_target("backup_schedule", schedule.id, schedule.name)
    session.commit()
    return _saved(session, schedule)


@router.put(
    "/{schedule_id:id}",
    response_model=ScheduleOut,
    responses=REFUSED,
    dependencies=guard(Permission.ADMIN, "backup_schedule.update"),
)
def replace_schedule(
    request: Request, schedule_id: int, body: ScheduleIn, session: SessionDep
) -> ScheduleOut:
    """Change every field; a change of timing skips the slots before it."""
    request.state.audit_target = audit_target("backup_schedule", schedule_id)
    schedule = schedules.update_schedule(session, schedule_id, body.asked())
    request.state.audit_target = audit_target("backup_schedule", schedule.id, schedule.name)
    session.commit()
    return _saved(session, schedule)


@router.delete(
    "/{schedule_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=REFUSED,
    dependencies=guard(Permission.ADMIN, "backup_schedule.delete"),
)
def delete_schedule(request: Request, schedule_id: int, session: SessionDep) -> Response:
    """Remove the schedule and its runs' records; the backups it made stay."""
    request.state.audit_target = audit_target("backup_schedule", schedule_id)
    schedule = schedules.delete_schedule(session, schedule_id)
    request.state.audit_target = audit_target("backup_schedule", schedule.id, schedule.name)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
