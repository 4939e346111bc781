"""The guest page, and lifecycle actions from the page and the host's guest table."""

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, SessionsDep, SyncDep, guard, needs
from app.errors import VirtdeckError
from app.models import Guest
from app.services import audit as audit_service
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_actions import ACTION_LABELS, ACTIONS, run_action
from app.services.inventory import last_seen
from app.services.snapshots import snapshot_tree
from app.web.htmx import toast_headers
from app.web.templating import templates

router = APIRouter()
# Parts of the guest page that refresh themselves (live events), by their element id.
PAGE_PARTS = {
    "guest-details": "partials/guest_details.html",
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
def guest_page(request: Request, session: SessionDep, uuid: str) -> HTMLResponse:
    """A guest's state and actions, resources, devices, activity and domain XML; htmx asks
    for one part of it when it refreshes that part."""
    guest = guest_service.get_guest(session, uuid)
    fragment = _fragment(request, guest)
    if fragment is not None:
        return fragment
    part = PAGE_PARTS.get(request.headers.get("HX-Target", ""))
    context = {
        "guest": guest,
        "host": guest.host,
        "last_seen": last_seen(guest, guest.host),
        "activity": audit_service.guest_activity(session, guest.uuid),
        "snapshots": [] if part else snapshot_tree(session, guest.id),
    }
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
