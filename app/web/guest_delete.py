"""The guest page's "Delete guest" panel: the disks it owns, and the confirmed delete."""

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.deps import SessionDep, SessionsDep, SyncDep, guard
from app.errors import Invalid, NotFound, VirtdeckError
from app.models.audit import audit_target
from app.services import guest_delete
from app.services import guests as guest_service
from app.services.auth import Permission
from app.web.templating import form_refused, templates, toast_headers

router = APIRouter()
PANEL = "partials/guest_delete.html"


def summary(deletion: guest_delete.Deletion) -> str:
    """One line for the toast: what was deleted, removed and kept."""
    parts = [f"{deletion.name} deleted"]
    if deletion.removed:
        parts.append(f"removed {len(deletion.removed)} disk(s)")
    if deletion.kept:
        parts.append(f"kept {len(deletion.kept)} disk(s)")
    return "; ".join(parts)


def _to_host_page(request: Request, host_id: int, toast: str) -> Response:
    """To the host page: htmx swaps its <main> in (so the toast survives), else a redirect."""
    url = f"/hosts/{host_id}"
    if not request.headers.get("HX-Request"):
        return RedirectResponse(url, status_code=303)
    location = {"path": url, "target": "main", "select": "main", "swap": "outerHTML"}
    headers = {"HX-Location": json.dumps(location), **toast_headers(toast)}
    return Response(status_code=204, headers=headers)


@router.get(
    "/guests/{uuid:guest}/delete", response_class=HTMLResponse, dependencies=guard(Permission.ADMIN)
)
def delete_panel(
    request: Request, session: SessionDep, sessions: SessionsDep, sync: SyncDep, uuid: str
) -> Response:
    """The panel with the disks a delete would remove and keep, asked of the host."""
    guest = guest_service.get_guest(session, uuid)
    context = {"guest": guest, "host": guest.host, "plan": None, "error": None, "form": {}}
    try:
        _guest, context["plan"] = guest_delete.disks_owned(sessions, sync, uuid)
    except VirtdeckError as exc:
        if isinstance(exc, NotFound):
            raise
        context["error"] = exc.message  # the host is unreachable, or libvirt refused
    return templates.TemplateResponse(request, PANEL, context)


@router.post(
    "/guests/{uuid:guest}/delete",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "guest.delete"),
)
def delete_guest(
    request: Request,
    sessions: SessionsDep,
    sync: SyncDep,
    uuid: str,
    confirm: Annotated[str, Form()] = "",
    remove_storage: Annotated[bool, Form()] = False,
    force: Annotated[bool, Form()] = False,
) -> Response:
    """Delete once the typed name matches; a mismatch shows the form again (422)."""
    guest = guest_delete.present_guest(sessions, uuid)
    form = {"confirm": confirm, "remove_storage": remove_storage, "force": force}
    try:
        guest_delete.check_confirmation(guest, confirm)
    except Invalid as exc:
        context = {"guest": guest, "host": guest.host, "part": "form"}
        return form_refused(request, PANEL, exc, form=form, **context)
    deletion = guest_delete.delete_guest(
        sessions, sync, uuid=uuid, remove_storage=remove_storage, force=force
    )
    request.state.audit_target = audit_target("guest", deletion.uuid, deletion.name)
    return _to_host_page(request, guest.host_id, summary(deletion))
