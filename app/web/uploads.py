"""The host page's "Upload an image" form, with the host's active pools read live when it opens;
static/upload.js sends the file to the API's upload route."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, SettingsDep, SyncDep, guard
from app.errors import VirtdeckError
from app.services import host_storage
from app.services import hosts as host_service
from app.services.auth import Permission
from app.web.templating import templates

router = APIRouter()


@router.get(
    "/hosts/{host_id:id}/upload",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE),
)
def upload_form(
    request: Request, session: SessionDep, sync: SyncDep, settings: SettingsDep, host_id: int
) -> HTMLResponse:
    """The upload form for the host's active pools, or why they cannot be read now."""
    host = host_service.get_host(session, host_id)
    context = {"host": host, "limit": settings.upload_max_bytes, "pools": [], "unavailable": None}
    try:
        context["pools"] = [p for p in host_storage.pools(session, sync, host_id) if p.active]
    except VirtdeckError as exc:
        context["unavailable"] = exc.message
    return templates.TemplateResponse(request, "partials/upload_form.html", context)
