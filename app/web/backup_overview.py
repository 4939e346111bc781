"""The backups overview page: every guest's last successful backup, its age and its next
scheduled run, and the guests with none or whose last one failed, a page at a time."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, SettingsDep, guard
from app.services.auth import Permission
from app.services.backups import overview as overview_service
from app.services.backups.digests import backup_hash
from app.web.htmx import PAGE_SIZE, page_count, wants_fragment
from app.web.templating import page_window, templates

router = APIRouter()
TABLE = "partials/backup_overview_table.html"


@router.get("/backups/overview", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def overview_page(
    request: Request, session: SessionDep, settings: SettingsDep, show: str = "", page: int = 1
) -> HTMLResponse:
    """Guests by name with their last successful backup; show=none or failed narrows them."""
    page, offset = page_window(page)
    errors = {}
    if show and show not in overview_service.SHOWS:
        errors["show"] = f"show: one of {', '.join(overview_service.SHOWS)}, or empty for all"
    if errors:
        rows, total, totals = [], 0, overview_service.totals(session)
    else:
        rows, total, totals = overview_service.overview(
            session, show=show or None, limit=PAGE_SIZE, offset=offset
        )
    context = {
        "guests": rows,
        "total": total,
        "totals": totals,
        "filters": {"show": show},
        "errors": errors,
        "page": page,
        "pages": page_count(total),
        "backup_hash": backup_hash(settings),
    }
    status_code = 422 if errors else 200
    template = TABLE if wants_fragment(request, "backup-overview") else "backup_overview.html"
    return templates.TemplateResponse(request, template, context, status_code=status_code)
