"""The audit log page: who did what, newest first, with filters."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, guard
from app.services import audit as audit_service
from app.services.auth import Permission
from app.web.htmx import PAGE_SIZE, page_count, wants_fragment
from app.web.templating import page_window, templates

router = APIRouter()


@router.get("/audit", response_class=HTMLResponse, dependencies=guard(Permission.ADMIN))
def audit_page(
    request: Request,
    session: SessionDep,
    user: str = "",
    action: str = "",
    result: str = "",
    page: int = 1,
) -> HTMLResponse:
    """Audit entries filtered by user, action (or its start) and result, a page at a time."""
    page, offset = page_window(page)
    entries = audit_service.list_entries(
        session,
        username=user.strip() or None,
        action=action.strip() or None,
        result=result or None,
        limit=PAGE_SIZE,
        offset=offset,
    )
    context = {
        "entries": entries,
        "present": audit_service.present_targets(session, entries.items),
        "filters": {"user": user, "action": action, "result": result},
        "results": audit_service.RESULTS,
        "page": page,
        "pages": page_count(entries.total),
    }
    if wants_fragment(request, "audit-table"):
        return templates.TemplateResponse(request, "partials/audit_table.html", context)
    return templates.TemplateResponse(request, "audit.html", context)
