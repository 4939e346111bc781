"""The audit log page: who did what, newest first, with filters."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, guard
from app.services import audit as audit_service
from app.services.auth import Permission
from app.web.templating import templates

router = APIRouter()
PAGE_SIZE = 100
# Far past any real log; keeps the offset within what the databases accept.
MAX_PAGE = 1_000_000


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
    page = min(max(page, 1), MAX_PAGE)
    entries = audit_service.list_entries(
        session,
        username=user.strip() or None,
        action=action.strip() or None,
        result=result or None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
    )
    context = {
        "entries": entries,
        "filters": {"user": user, "action": action, "result": result},
        "results": audit_service.RESULTS,
        "page": page,
        "pages": max(1, -(-entries.total // PAGE_SIZE)),
    }
    if request.headers.get("HX-Target") == "audit-table":
        return templates.TemplateResponse(request, "partials/audit_table.html", context)
    return templates.TemplateResponse(request, "audit.html", context)
