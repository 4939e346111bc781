"""The new-guest wizard: a form whose storage and network choices follow the chosen host."""

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.deps import JobsDep, SessionDep, SessionsDep, SyncDep, guard, needs, parse_row_id
from app.errors import Invalid, VirtdeckError
from app.models.audit import audit_target
from app.services import guest_create, host_storage
from app.services import hosts as host_service
from app.services import jobs as job_service
from app.services.auth import Permission, Principal
from app.services.ports import HostCalls
from app.web.templating import form_refused, redirect, templates

router = APIRouter()
DEFAULTS = {"vcpus": "1", "memory_mib": "512", "disk": "new", "disk_size_gib": "10",
            "disk_format": "raw", "firmware": "bios", "cpu": "", "start": "on"}  # fmt: skip


def _whole(value: str, field: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise Invalid(f"{field}: a whole number", field=field) from None


def _volume_ref(value: str, format_: str = "raw") -> guest_create.VolumeRef:
    """'pool/volume' (libvirt allows no '/' in pool names) as a reference."""
    pool, _, volume = value.partition("/")
    return guest_create.VolumeRef(pool=pool, volume=volume, format=format_)


def _disk(form: dict[str, str]) -> guest_create.NewDisk | guest_create.VolumeRef | None:
    if form["disk"] == "new":
        return guest_create.NewDisk(
            form["disk_pool"], _whole(form["disk_size_gib"], "disk.size_gib")
        )
    if form["disk"] == "existing":
        return _volume_ref(form["disk_volume"], form["disk_format"])
    return None


def _cpu(value: str) -> tuple[str | None, str | None]:
    """The CPU select's value as (mode, model): '' is the host's choice, 'custom:NAME' a model."""
    mode, _, model = value.partition(":")
    return (mode or None), (model or None)


def _request(form: dict[str, str]) -> guest_create.CreateRequest:
    """The service's request for the submitted form; Invalid for numbers that are not."""
    host_id = form["host_id"].strip()
    return guest_create.CreateRequest(
        host_id=_host_id(host_id) if host_id else None,
        name=form["name"],
        vcpus=_whole(form["vcpus"], "vcpus"),
        memory_mib=_whole(form["memory_mib"], "memory_mib"),
        disk=_disk(form),
        cdrom=_volume_ref(form["cdrom"]) if form["cdrom"] else None,
        network=form["network"] or None,
        firmware=form["firmware"],
        cpu_mode=_cpu(form["cpu"])[0],
        cpu_model=_cpu(form["cpu"])[1],
        start=bool(form["start"]),
        force=bool(form["force"]),
    )


def _host_id(value: str) -> int:
    return parse_row_id(value, field="host_id", what="a host")


def _choices(session: Session, sync: HostCalls, host_id: str) -> dict[str, Any]:
    """The chosen host's live choices for the form, or why they could not be read."""
    if not host_id.strip():
        return {"choices": None, "choices_error": None}
    try:
        return {"choices": host_storage.host_choices(session, sync, _host_id(host_id))}
    except VirtdeckError as exc:
        return {"choices": None, "choices_error": exc.message}


def _context(session: Session, sync: HostCalls, host_id: str) -> dict[str, Any]:
    """Every host for the select, and the chosen one's choices."""
    return {"hosts": host_service.list_hosts(session), **_choices(session, sync, host_id)}


@router.get("/guests/new", response_class=HTMLResponse, dependencies=guard(Permission.OPERATE))
def new_guest_page(
    request: Request, session: SessionDep, sync: SyncDep, host_id: str = ""
) -> HTMLResponse:
    """The wizard, with the host chosen when the link names one."""
    context = {**_context(session, sync, host_id), "form": {**DEFAULTS, "host_id": host_id}}
    return templates.TemplateResponse(request, "guest_new.html", context)


@router.get("/guests/new/choices", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def host_choices(
    request: Request, session: SessionDep, sync: SyncDep, host_id: str = ""
) -> HTMLResponse:
    """The host-dependent part of the wizard: pools, volumes, ISOs, networks, firmware."""
    context = {"form": {**DEFAULTS, "host_id": host_id}, **_choices(session, sync, host_id)}
    return templates.TemplateResponse(request, "partials/guest_choices.html", context)


class GuestForm(BaseModel):
    """The wizard's fields as typed; _request turns them into a request."""

    host_id: str = ""
    name: str = ""
    vcpus: str = ""
    memory_mib: str = ""
    disk: str = "none"
    disk_pool: str = ""
    disk_size_gib: str = ""
    disk_volume: str = ""
    disk_format: str = "raw"
    cdrom: str = ""
    network: str = ""
    firmware: str = "bios"
    cpu: str = ""
    start: str = ""
    force: str = ""


@router.post("/guests/new", response_class=HTMLResponse)
def create_guest(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.create")],
    typed: Annotated[GuestForm, Form()],
) -> Response:
    """Create from the form: the guest's page, a job's progress, or the form with the reason."""
    form = typed.model_dump()
    with contextlib.suppress(Invalid):  # the host, until there is a guest to name
        request.state.audit_target = audit_target("host", _host_id(typed.host_id))
    try:
        created = guest_create.create_guest(
            session, request=_request(form), principal=principal, sync=sync, jobs=jobs,
            sessions=sessions,
        )  # fmt: skip
    except VirtdeckError as exc:
        if exc.field is None:
            raise
        context = _context(session, sync, typed.host_id)
        return form_refused(request, "partials/guest_form.html", exc, form=form, **context)
    if created.guest is not None:
        request.state.audit_target = audit_target("guest", created.guest.uuid, created.guest.name)
        return redirect(request, f"/guests/{created.guest.uuid}")
    request.state.audit_target = audit_target("guest", created.job.guest_uuid, typed.name)
    context = {**_context(session, sync, typed.host_id), "form": form, "job": created.job}
    return templates.TemplateResponse(request, "partials/guest_form.html", context, status_code=202)


@router.get("/jobs/{job_id:id}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def job_progress(request: Request, session: SessionDep, job_id: int) -> Response:
    """A job's progress; the polling fragment goes to the guest once a create succeeded."""
    job = job_service.get_job(session, job_id)
    made = (job.result or {}).get("guest_uuid") if job.status == "succeeded" else None
    if request.headers.get("HX-Request"):
        if made:
            return redirect(request, f"/guests/{made}")
        return templates.TemplateResponse(request, "partials/job_progress.html", {"job": job})
    return templates.TemplateResponse(request, "job.html", {"job": job})
