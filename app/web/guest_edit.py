"""The guest page's Edit section: vCPUs, memory, autostart and description, read from the host
when the section loads, saved through the same service as PATCH /api/v1/guests/{uuid}/settings."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, SessionsDep, SyncDep, guard, needs
from app.errors import VirtdeckError
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_edit import (
    BOOT_DEVICES,
    Change,
    current_settings,
    edit_guest,
    rename_guest,
)
from app.web.htmx import navigate, with_toast
from app.web.templating import form_refused, templates

router = APIRouter()
TEMPLATE = "partials/guest_edit.html"
# How each field that waits for a start is named on the page.
FIELD_WORDS = {
    "vcpus": "vCPUs",
    "vcpus_max": "maximum vCPUs",
    "memory": "memory",
    "memory_max": "maximum memory",
    "boot_order": "boot order",
}
# How the boot devices are named on the page, in the order of BOOT_DEVICES.
BOOT_WORDS = {"hd": "hard disk", "cdrom": "CD-ROM", "network": "network (PXE)", "fd": "floppy"}
templates.env.globals["boot_devices"] = {dev: BOOT_WORDS[dev] for dev in BOOT_DEVICES}


def _form(now) -> dict:
    return {
        "vcpus": now.vcpus,
        "vcpus_max": now.vcpus_max,
        "memory_mib": now.memory_kib // 1024,
        "memory_max_mib": now.memory_max_kib // 1024,
        "autostart": now.autostart,
        "description": now.description,
        "boot_order": list(now.boot_order),
    }


def _boot_order(chosen: list[str] | None, shown: str) -> tuple[str, ...] | None:
    """The boot order chosen, or None when it is what the form showed (whose slots may not
    hold all of a guest's boot devices) or left empty."""
    order = tuple(dev for dev in chosen or () if dev)
    return None if not order or ",".join(order) == shown else order


@router.get(
    "/guests/{uuid:guest}/edit", response_class=HTMLResponse, dependencies=guard(Permission.OPERATE)
)
def edit_section(request: Request, session: SessionDep, sync: SyncDep, uuid: str) -> Response:
    """The Edit section with the guest's settings as its host has them now."""
    guest = guest_service.get_guest(session, uuid)
    try:
        now = current_settings(sync, guest)
    except VirtdeckError as exc:
        context = {"guest": guest, "unavailable": exc.message, "form": {}}
        return templates.TemplateResponse(request, TEMPLATE, context)
    context = {"guest": guest, "now": now, "form": _form(now)}
    return templates.TemplateResponse(request, TEMPLATE, context)


@router.post("/guests/{uuid:guest}/edit", response_class=HTMLResponse)
def save_edit(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.edit")],
    vcpus: Annotated[int, Form()],
    vcpus_max: Annotated[int, Form()],
    memory_mib: Annotated[int, Form()],
    memory_max_mib: Annotated[int, Form()],
    autostart: Annotated[bool, Form()] = False,
    description: Annotated[str, Form(max_length=4000)] = "",
    boot_order: Annotated[list[str] | None, Form()] = None,
    boot_shown: Annotated[str, Form(max_length=200)] = "",
    force: Annotated[bool, Form()] = False,
) -> Response:
    """Save the Edit section: what changed on the running guest, what applies at next start."""
    change = Change(
        vcpus=vcpus,
        vcpus_max=vcpus_max,
        memory_kib=memory_mib * 1024,
        memory_max_kib=memory_max_mib * 1024,
        autostart=autostart,
        description=description,
        boot_order=_boot_order(boot_order, boot_shown),
    )
    typed = {
        "vcpus": vcpus, "vcpus_max": vcpus_max, "memory_mib": memory_mib,
        "memory_max_mib": memory_max_mib, "autostart": autostart, "description": description,
        "boot_order": list(change.boot_order or ()),
    }  # fmt: skip
    with sessions() as session:
        guest = guest_service.get_guest(session, uuid)
    try:
        result = edit_guest(
            sessions, sync, uuid=uuid, change=change, principal=principal, force=force
        )
    except VirtdeckError as exc:
        if exc.field is None or exc.status_code >= 500:
            raise
        return form_refused(request, TEMPLATE, exc, form=typed, guest=guest)
    now = current_settings(sync, result.guest)
    later = [FIELD_WORDS[f] for f in result.applied.next_start]
    context = {"guest": result.guest, "now": now, "form": _form(now), "later": later}
    response = templates.TemplateResponse(request, TEMPLATE, context)
    words = "saved" + (f"; {', '.join(later)} at next start" if later else "")
    return with_toast(response, f"{result.guest.name}: {words}")


@router.post(
    "/guests/{uuid:guest}/rename",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.rename"),
)
def rename(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    name: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Rename the shut-off guest and show its page again; a refusal shows next to the name."""
    try:
        guest = rename_guest(sessions, sync, uuid=uuid, name=name.strip())
    except VirtdeckError as exc:
        if exc.field != "name":
            raise
        with sessions() as session:
            guest = guest_service.get_guest(session, uuid)
        now = current_settings(sync, guest)
        return form_refused(
            request, TEMPLATE, exc, form={**_form(now), "name": name}, guest=guest, now=now
        )
    return navigate(request, f"/guests/{uuid}?section=hardware", toast=f"renamed to {guest.name}")
