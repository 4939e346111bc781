"""The guest page, and lifecycle actions from the page and the host's guest table."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, SessionsDep, SyncDep, guard, needs
from app.errors import Invalid, VirtdeckError
from app.models import Guest
from app.services import audit as audit_service
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_actions import ACTION_LABELS, ACTIONS, run_action
from app.services.guest_failures import last_failure
from app.services.guest_sections import check_section, guest_sections
from app.services.guest_tags import set_tags
from app.services.inventory import last_seen
from app.services.snapshots import snapshot_tree
from app.services.tag_rules import split_tags
from app.web.htmx import toast_headers
from app.web.templating import form_refused, templates

router = APIRouter()
TAGS_PANEL = "partials/guest_tags.html"
# Parts of the guest page that refresh themselves (live events), by their element id.
PAGE_PARTS = {
    "guest-failure": "partials/guest_failure.html",
    "guest-details": "partials/guest_details.html",
    "guest-devices": "partials/guest_devices.html",
    "guest-activity": "partials/guest_activity.html",
}


def _fragment(request: Request, guest: Guest, *, toast: str | None = None) -> HTMLResponse | None:
    """The row or status panel htmx asked for (with a toast), or None for the whole page."""
    target = request.headers.get("HX-Target", "")
    if target.startswith(("guest-row-", "fleet-row-")):  # a host's table, the Guests page's
        template = "partials/guest_row.html"
    elif target == "guest-status":
        template = "partials/guest_status.html"
    else:
        return None
    context = {"guest": guest, "host": guest.host, "fleet": target.startswith("fleet-row-")}
    response = templates.TemplateResponse(request, template, context)
    if toast:
        response.headers.update(toast_headers(toast))
    return response


@router.get(
    "/guests/{uuid:guest}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def guest_page(
    request: Request,
    session: SessionDep,
    uuid: str,
    section: Annotated[str, Query(max_length=32)] = "overview",
) -> HTMLResponse:
    """One section of a guest's page (overview unless ?section= names another); htmx asks
    for one part of it when it refreshes that part."""
    guest = guest_service.get_guest(session, uuid)
    fragment = _fragment(request, guest)
    if fragment is not None:
        return fragment
    part = PAGE_PARTS.get(request.headers.get("HX-Target", ""))
    if part is None:
        section = check_section(guest, section)
    context = {
        "guest": guest,
        "host": guest.host,
        "last_seen": last_seen(guest, guest.host),
        "failure": last_failure(guest),
        "section": section,
        "sections": guest_sections(guest),
    }
    if part == PAGE_PARTS["guest-activity"] or (not part and section == "activity"):
        context["activity"] = audit_service.guest_activity(session, guest.uuid)
    if not part and section == "snapshots":
        context["snapshots"] = snapshot_tree(session, guest.id)
    return templates.TemplateResponse(request, part or "guest.html", context)


@router.post(
    "/guests/{uuid:guest}/actions/{action:word}",
    response_class=HTMLResponse,
)
def guest_action(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    action: str,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.action")],
    force: bool = False,
) -> Response:
    """Run an action (force: admins start over the policy); answer with the row and a toast."""
    if action not in ACTIONS:
        raise VirtdeckError(f"action: unknown action '{action}'", field="action")
    request.state.action = f"guest.{action}"
    guest = run_action(sessions, sync, uuid=uuid, action=action, principal=principal, force=force)
    toast = f"{guest.name}: {ACTION_LABELS[action]} done"
    return _fragment(request, guest, toast=toast) or Response(
        status_code=204, headers={"HX-Refresh": "true"}
    )


@router.post(
    "/guests/{uuid:guest}/tags",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE, "guest.tags"),
)
def guest_tags(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    tags: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Replace the guest's tags (typed with spaces or commas between); the Tags panel again,
    with the reason next to the field for a bad tag."""
    try:
        guest = set_tags(sessions, sync, uuid=uuid, tags=split_tags(tags))
    except Invalid as exc:
        with sessions() as session:
            guest = guest_service.get_guest(session, uuid)
        return form_refused(request, TAGS_PANEL, exc, guest=guest, form={"tags": tags})
    response = templates.TemplateResponse(request, TAGS_PANEL, {"guest": guest, "form": {}})
    response.headers.update(toast_headers(f"{guest.name}: tags saved"))
    return response
