"""The Guests page: every guest of every host in one table, searched, filtered, sorted and in
pages, read from the database (it stays fast at tens of thousands of guests)."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, SettingsDep, bulk_run, guard, needs, parse_row_id
from app.services import guest_bulk
from app.services import guests as guest_service
from app.services import hosts as host_service
from app.services import usage as usage_service
from app.services.auth import Permission, Principal
from app.web.htmx import PAGE_SIZE, page_count, toast_headers, wants_fragment
from app.web.templating import page_window, templates

router = APIRouter()
# The table's sortable columns, in order: (sort key, heading).
COLUMNS = (
    ("name", "Name"),
    ("host", "Host"),
    ("state", "State"),
    ("vcpus", "vCPUs"),
    ("memory", "Memory"),
    ("cpu", "CPU"),
    ("uptime", "Uptime"),
)


@router.get("/guests", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def guest_list(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    q: Annotated[str, Query(max_length=255)] = "",
    host: str = "",
    state: str = "",
    tag: Annotated[str, Query(max_length=64)] = "",
    sort: str = "name",
    page: int = 1,
) -> HTMLResponse:
    """All guests, by any column, searchable by name and filtered by host, state and tag; htmx
    asks for just the table when it refreshes it (live events) or the filters change."""
    page, offset = page_window(page)
    host_id = parse_row_id(host, field="host", what="a host") if host.strip() else None
    guests = guest_service.list_guests(
        session,
        host_id=host_id,
        state=state or None,
        q=q,
        tag=tag,
        sort=sort,
        limit=PAGE_SIZE,
        offset=offset,
    )
    filters = {"q": q, "host": "" if host_id is None else host_id, "state": state}
    context = {
        "guests": guests,
        "hosts": host_service.list_hosts(session),
        # The tag only when there is one: the links of an untagged list stay as they were.
        "filters": {**filters, "tag": tag.strip().lower()} if tag.strip() else filters,
        "bulk_actions": guest_bulk.BULK_ACTIONS,
        "sort": sort,
        "columns": COLUMNS,
        "page": page,
        "pages": page_count(guests.total),
        "states": guest_service.STATE_FILTERS,
        "sparks": usage_service.sparks(
            session, [g.id for g in guests.items], usage_interval=settings.usage_interval
        ),
    }
    if wants_fragment(request, "fleet-guests"):
        return templates.TemplateResponse(request, "partials/fleet_guests.html", context)
    return templates.TemplateResponse(request, "guests.html", context)


@router.post("/guests/bulk", response_class=HTMLResponse)
def bulk_action(
    request: Request,
    principal: Annotated[Principal, needs(Permission.OPERATE)],
    action: Annotated[str, Form()] = "",
    uuid: Annotated[list[str] | None, Form()] = None,
) -> HTMLResponse:
    """One action for the guests ticked in the table: a result each, in a table, and a toast
    that counts them (the rows follow by live events)."""
    request.state.action = f"guest.bulk_{action}" if action in guest_bulk.BULK_ACTIONS else None
    results = guest_bulk.run_bulk(bulk_run(request, principal), action=action, uuids=uuid or [])
    summary = guest_bulk.summary(results, action)
    return templates.TemplateResponse(
        request, "partials/bulk_results.html", {"results": results, "summary": summary},
        headers=toast_headers(summary),
    )  # fmt: skip
