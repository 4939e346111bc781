"""Backup schedules in the browser: the list, one schedule's page with its latest runs, the
form admins save them with, and the preview of what the retention policy would remove, shown
beside the form before it is saved."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import SessionDep, guard, needs, parse_row_id
from app.errors import VirtdeckError
from app.models import BackupSchedule
from app.models.audit import audit_target
from app.models.base import utcnow
from app.services import hosts as host_service
from app.services.auth import Permission, Principal
from app.services.backups import schedules
from app.services.backups.retention import KEEPS, Policy
from app.web.htmx import redirect
from app.web.templating import form_refused, templates

router = APIRouter()
FORM = "partials/schedule_form.html"
PREVIEW = "partials/schedule_preview.html"
FIELDS = frozenset(
    {"name", "scope", "guest_uuid", "host_id", "frequency", "weekday", "time",
     "jitter_minutes", "max_parallel", *KEEPS}
)  # fmt: skip
NEW = {"scope": "all", "frequency": "daily", "time": "02:00", "max_parallel": 1, "keep_last": 7,
       "jitter_minutes": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0,
       "enabled": True}  # fmt: skip


class ScheduleForm:
    """The form's fields as typed (strings for the ids, so an empty choice is no error)."""

    def __init__(
        self,
        name: Annotated[str, Form(max_length=64)] = "",
        enabled: Annotated[bool, Form()] = False,
        scope: Annotated[str, Form(max_length=8)] = "",
        guest_uuid: Annotated[str, Form(max_length=36)] = "",
        host_id: Annotated[str, Form(max_length=16)] = "",
        frequency: Annotated[str, Form(max_length=8)] = "",
        weekday: Annotated[str, Form(max_length=2)] = "",
        time: Annotated[str, Form(max_length=8)] = "",
        jitter_minutes: Annotated[int, Form()] = 0,
        max_parallel: Annotated[int, Form()] = 1,
        keep_last: Annotated[int, Form()] = 0,
        keep_daily: Annotated[int, Form()] = 0,
        keep_weekly: Annotated[int, Form()] = 0,
        keep_monthly: Annotated[int, Form()] = 0,
    ) -> None:
        self.values = {
            "name": name, "enabled": enabled, "scope": scope, "guest_uuid": guest_uuid,
            "host_id": host_id, "frequency": frequency, "weekday": weekday, "time": time,
            "jitter_minutes": jitter_minutes, "max_parallel": max_parallel,
            "keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
            "keep_monthly": keep_monthly,
        }  # fmt: skip

    def asked(self) -> schedules.ScheduleIn:
        """What the service checks; 422 naming host_id when it is not a choice."""
        values = dict(self.values)
        host, weekday = values.pop("host_id"), values.pop("weekday")
        values["guest_uuid"] = values["guest_uuid"] or None
        if values["scope"] == "host":
            values["host_id"] = parse_row_id(host, field="host_id", what="a host")
        return schedules.ScheduleIn(**values, weekday=int(weekday) if weekday.isdigit() else None)


def _form_of(schedule: BackupSchedule) -> dict:
    return {
        "id": schedule.id, "name": schedule.name, "enabled": schedule.enabled,
        "scope": schedule.scope, "guest_uuid": schedule.guest_uuid or "",
        "host_id": schedule.host_id or "", "frequency": schedule.frequency,
        "weekday": "" if schedule.weekday is None else schedule.weekday,
        "time": schedules.format_time(schedule.at_seconds),
        "jitter_minutes": schedule.jitter_minutes, "max_parallel": schedule.max_parallel,
        **{name: getattr(schedule, name) for name in KEEPS},
    }  # fmt: skip


def _choices(session: Session) -> dict:
    return {"hosts": host_service.list_hosts(session), "weekdays": schedules.WEEKDAYS}


def _save(
    request: Request,
    session: Session,
    save: Callable[[schedules.ScheduleIn], BackupSchedule],
    *,
    form: ScheduleForm,
    values: dict,
) -> Response:
    """Save what the form asks and go to the schedule's page, or show the form again with the
    reason by its field."""
    try:
        schedule = save(form.asked())
    except VirtdeckError as exc:
        if exc.field not in FIELDS:
            raise
        return form_refused(request, FORM, exc, form=values, **_choices(session))
    request.state.audit_target = audit_target("backup_schedule", schedule.id, schedule.name)
    session.commit()
    return redirect(request, f"/backup-schedules/{schedule.id}")


@router.get("/backup-schedules", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def schedules_page(request: Request, session: SessionDep) -> HTMLResponse:
    """Every schedule with its next run; admins get the form for a new one."""
    now = utcnow()
    rows = [
        (s, schedules.next_slot(s, now) if s.enabled else None)
        for s in schedules.list_schedules(session)
    ]
    context = {**_choices(session), "form": dict(NEW), "rows": rows}
    return templates.TemplateResponse(request, "backup_schedules.html", context)


@router.get(
    "/backup-schedules/preview", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def preview(
    request: Request,
    session: SessionDep,
    scope: Annotated[str, Query(max_length=8)] = "all",
    guest_uuid: Annotated[str, Query(max_length=36)] = "",
    host_id: Annotated[str, Query(max_length=16)] = "",
    keep_last: int = 0,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
) -> HTMLResponse:
    """What the form's policy would remove from the guests of its scope, were it saved now."""
    try:
        policy = Policy.checked(
            keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
        )  # fmt: skip
        host = parse_row_id(host_id, field="host_id", what="a host") if scope == "host" else None
        found = schedules.preview(session, schedules.Scope(scope, guest_uuid or None, host), policy)
    except VirtdeckError as exc:
        if exc.field not in FIELDS:
            raise
        return templates.TemplateResponse(request, PREVIEW, {"refused": exc.message})
    removed = sum(1 for _guest, verdicts in found for v in verdicts if not v.keep)
    return templates.TemplateResponse(request, PREVIEW, {"found": found, "removed": removed})


@router.get(
    "/backup-schedules/{schedule_id:id}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def schedule_page(request: Request, session: SessionDep, schedule_id: int) -> HTMLResponse:
    """One schedule, its latest runs, and (for admins) its form."""
    schedule = schedules.get_schedule(session, schedule_id)
    context = {
        **_choices(session),
        "form": _form_of(schedule),
        "schedule": schedule,
        "runs": schedules.recent_runs(session, schedule_id),
        "next_run": schedules.next_slot(schedule, utcnow()) if schedule.enabled else None,
    }
    return templates.TemplateResponse(request, "backup_schedule.html", context)


@router.post("/backup-schedules", response_class=HTMLResponse)
def create(
    request: Request,
    session: SessionDep,
    form: Annotated[ScheduleForm, Depends()],
    principal: Annotated[Principal, needs(Permission.ADMIN, "backup_schedule.create")],
) -> Response:
    """Save a new schedule from the form; a refusal shows the form again with the reason."""
    return _save(
        request,
        session,
        lambda asked: schedules.create_schedule(session, asked, created_by=principal.username),
        form=form,
        values=form.values,
    )


@router.post(
    "/backup-schedules/{schedule_id:id}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "backup_schedule.update"),
)
def update(
    request: Request,
    session: SessionDep,
    schedule_id: int,
    form: Annotated[ScheduleForm, Depends()],
) -> Response:
    """Save the schedule's new values; a refusal shows the form again with the reason."""
    request.state.audit_target = audit_target("backup_schedule", schedule_id)
    return _save(
        request,
        session,
        lambda asked: schedules.update_schedule(session, schedule_id, asked),
        form=form,
        values={**form.values, "id": schedule_id},
    )


@router.post(
    "/backup-schedules/{schedule_id:id}/delete",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "backup_schedule.delete"),
)
def delete(request: Request, session: SessionDep, schedule_id: int) -> Response:
    """Remove the schedule (the backups it made stay)."""
    request.state.audit_target = audit_target("backup_schedule", schedule_id)
    schedule = schedules.delete_schedule(session, schedule_id)
    request.state.audit_target = audit_target("backup_schedule", schedule.id, schedule.name)
    session.commit()
    return redirect(request, "/backup-schedules")
