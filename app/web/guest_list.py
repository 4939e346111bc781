"""The Guests page: every guest of every host in one table, searched, filtered, sorted and in
pages, read from the database (it stays fast at tens of thousands of guests)."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, guard, parse_row_id
from app.services import guests as guest_service
from app.services import hosts as host_service
from app.services.auth import Permission
from app.web.htmx import PAGE_SIZE, page_count, wants_fragment
from app.web.templating import page_window, templates

router = APIRouter()
# The table's sortable columns, in order: (sort key, heading).
COLUMNS = (
    ("name", "Name"),
    ("host", "Host"),
    ("state", "State"),
    ("vcpus", "vCPUs"),
    ("memory", "Memory"),
)


@router.get("/guests", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def guest_list(
    request: Request,
    session: SessionDep,
    q: str = "",
    host: str = "",
    state: str = "",
    sort: str = "name",
    page: int = 1,
) -> HTMLResponse:
    """All guests, by any column, searchable by name and filtered by host and state; htmx asks
    for just the table when it refreshes it (live events) or the filters change."""
    page, offset = page_window(page)
    host_id = parse_row_id(host, field="host", what="a host") if host.strip() else None
    guests = guest_service.list_guests(
        session,
        host_id=host_id,
        state=state or None,
        q=q,
        sort=sort,
        limit=PAGE_SIZE,
        offset=offset,
    )
    context = {
        "guests": guests,
        "hosts": host_service.list_hosts(session),
        "filters": {"q": q, "host": "" if host_id is None else host_id, "state": state},
        "sort": sort,
        "columns": COLUMNS,
        "page": page,
        "pages": page_count(guests.total),
        "states": guest_service.STATE_FILTERS,
    }
    if wants_fragment(request, "fleet-guests"):
        return templates.TemplateResponse(request, "partials/fleet_guests.html", context)
    return templates.TemplateResponse(request, "guests.html", context)
