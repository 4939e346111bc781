"""The new-guest wizard: a form whose storage and network choices follow the chosen host, a disk
made from a base image with cloud-init, and saved profiles that fill the form."""

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.deps import JobsDep, SessionDep, SessionsDep, SyncDep, guard, needs, parse_row_id
from app.errors import Invalid, VirtdeckError
from app.models.audit import audit_target
from app.services import audit, guest_create, host_storage, profiles
from app.services import hosts as host_service
from app.services.auth import Permission, Principal
from app.services.ports import HostCalls
from app.web.htmx import redirect
from app.web.templating import form_refused, templates

router = APIRouter()
DEFAULTS = {"vcpus": "1", "memory_mib": "512", "disk": "new", "disk_size_gib": "10",
            "disk_format": "raw", "image_format": "qcow2", "image_mode": "copy",
            "firmware": "bios", "cpu": "", "start": "on"}  # fmt: skip


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
    if form["disk"] in ("new", "image"):
        return guest_create.NewDisk(
            form["disk_pool"], _whole(form["disk_size_gib"], "disk.size_gib")
        )
    if form["disk"] == "existing":
        return _volume_ref(form["disk_volume"], form["disk_format"])
    return None


def _image(form: dict[str, str]) -> guest_create.BaseImage | None:
    """The base image of a disk made from one."""
    if form["disk"] != "image":
        return None
    ref = _volume_ref(form["image_volume"], form["image_format"])
    return guest_create.BaseImage(ref.pool, ref.volume, ref.format, form["image_mode"])


def _cloud_init(form: dict[str, str]) -> guest_create.CloudInit | None:
    """cloud-init's part of the form (shown for a disk from an image), when it names a user."""
    if form["disk"] != "image" or not form["cloud_init_user"]:
        return None
    return guest_create.CloudInit(
        user=form["cloud_init_user"],
        password=form["cloud_init_password"] or None,
        ssh_keys=tuple(line.strip() for line in form["ssh_keys"].splitlines() if line.strip()),
        hostname=form["hostname"] or None,
        user_data=form["user_data"] or None,
    )


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
        image=_image(form),
        cloud_init=_cloud_init(form),
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
    """Every host and profile for the selects, and the chosen host's choices."""
    return {
        "hosts": host_service.list_hosts(session),
        "profiles": profiles.list_profiles(session),
        **_choices(session, sync, host_id),
    }


def _profile_form(session: Session, profile_id: str, host_id: str) -> dict[str, str]:
    """The form filled from a profile (its host unless the link names one), or the defaults."""
    if not profile_id.strip():
        return {**DEFAULTS, "host_id": host_id}
    profile = profiles.get_profile(session, parse_row_id(profile_id, field="profile_id",
                                                         what="a profile"))  # fmt: skip
    saved = profiles.profile_fields(profile)
    image = saved.image
    return {
        **DEFAULTS,
        "profile_id": str(profile.id),
        "host_id": host_id or str(saved.host_id or ""),
        "vcpus": str(saved.vcpus),
        "memory_mib": str(saved.memory_mib),
        "disk": "image" if image else "new",
        "disk_pool": saved.disk.pool,
        "disk_size_gib": str(saved.disk.size_gib),
        "image_volume": f"{image.pool}/{image.volume}" if image else "",
        "image_format": image.format if image else DEFAULTS["image_format"],
        "image_mode": image.mode if image else DEFAULTS["image_mode"],
        "network": saved.network or "",
        "cloud_init_user": saved.cloud_init_user or "",
        "ssh_keys": "\n".join(saved.ssh_keys),
    }


@router.get("/guests/new", response_class=HTMLResponse, dependencies=guard(Permission.OPERATE))
def new_guest_page(
    request: Request, session: SessionDep, sync: SyncDep, host_id: str = "", profile_id: str = ""
) -> HTMLResponse:
    """The wizard, with the host chosen or the profile's choices filled in when the link names
    them."""
    form = _profile_form(session, profile_id, host_id)
    context = {**_context(session, sync, form["host_id"]), "form": form}
    return templates.TemplateResponse(request, "guest_new.html", context)


@router.get(
    "/guests/new/profile", response_class=HTMLResponse, dependencies=guard(Permission.OPERATE)
)
def form_from_profile(
    request: Request, session: SessionDep, sync: SyncDep, profile_id: str = ""
) -> HTMLResponse:
    """The wizard's form filled from the chosen profile (the defaults for none)."""
    form = _profile_form(session, profile_id, "")
    context = {**_context(session, sync, form["host_id"]), "form": form}
    return templates.TemplateResponse(request, "partials/guest_form.html", context)


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
    image_volume: str = ""
    image_format: str = "qcow2"
    image_mode: str = "copy"
    cloud_init_user: str = ""
    cloud_init_password: str = ""
    ssh_keys: str = ""
    hostname: str = ""
    user_data: str = ""
    profile_id: str = ""
    profile_name: str = ""
    cdrom: str = ""
    network: str = ""
    firmware: str = "bios"
    cpu: str = ""
    start: str = ""
    force: str = ""

    def shown(self) -> dict[str, str]:
        """The typed values to show again in the form: all but the password."""
        return self.model_dump() | {"cloud_init_password": ""}


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
    form = typed.shown()
    with contextlib.suppress(Invalid):  # the host, until there is a guest to name
        request.state.audit_target = audit.named(session, "host", _host_id(typed.host_id))
    try:
        created = guest_create.create_guest(
            session, request=_request(typed.model_dump()), principal=principal, sync=sync,
            jobs=jobs, sessions=sessions,
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
    context = {
        **_context(session, sync, typed.host_id),
        "form": form,
        "job": created.job,
        "started": True,
        "wizard": True,
    }
    return templates.TemplateResponse(request, "partials/guest_form.html", context, status_code=202)


@router.post("/guests/new/profile", response_class=HTMLResponse)
def save_profile(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "profile.create")],
    typed: Annotated[GuestForm, Form()],
) -> Response:
    """Save the form's choices as a profile; the form comes back with it chosen, or the reason."""
    form = typed.shown()
    context = _context(session, sync, typed.host_id)
    try:
        fields = profiles.profile_of(typed.profile_name.strip(), _request(typed.model_dump()))
        profile = profiles.create_profile(session, fields, created_by=principal.username)
    except VirtdeckError as exc:
        if exc.field is None:
            raise
        if exc.field == "name":  # the profile's name has a box of its own
            message = f"profile_name: {exc.message.removeprefix('name: ')}"
            exc = type(exc)(message, field="profile_name")
        return form_refused(request, "partials/guest_form.html", exc, form=form, **context)
    request.state.audit_target = audit_target("profile", profile.id, profile.name)
    session.commit()
    context["profiles"] = profiles.list_profiles(session)
    form |= {"profile_id": str(profile.id), "saved_profile": profile.name}
    return templates.TemplateResponse(
        request, "partials/guest_form.html", {**context, "form": form}
    )
