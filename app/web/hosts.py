"""Overview, host pages, and adding and removing hosts."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import SessionDep, SettingsDep, SyncDep, guard
from app.errors import VirtdeckError
from app.models.audit import audit_target
from app.services import fleet
from app.services import guests as guest_service
from app.services import hosts as host_service
from app.services import overcommit as overcommit_service
from app.services import usage as usage_service
from app.services.auth import Permission
from app.web.htmx import PAGE_SIZE, page_count, redirect, wants_fragment, with_toast
from app.web.templating import form_refused, page_window, templates

router = APIRouter()


@router.get("/", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def overview(request: Request, session: SessionDep) -> HTMLResponse:
    """Fleet totals and a card per host; htmx asks for just those when it refreshes them."""
    hosts = host_service.list_hosts(session)
    sums = host_service.guest_sums(session, [host.id for host in hosts])
    summaries = host_service.summarize(session, hosts, sums)
    ratios = fleet.host_ratios(session, hosts, sums)
    refresh = wants_fragment(request, "host-cards")
    context = {
        "summaries": summaries,
        "overcommit": {item.host_id: item for item in ratios},
        "fleet": overcommit_service.fleet_totals(ratios),
        "fleet_oob": refresh,
        "form": {},
    }
    page = "partials/host_cards.html" if refresh else "overview.html"
    return templates.TemplateResponse(request, page, context)


@router.post(
    "/hosts", response_class=HTMLResponse, dependencies=guard(Permission.ADMIN, "host.add")
)
def add_host(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    settings: SettingsDep,
    name: Annotated[str, Form()] = "",
    uri: Annotated[str, Form()] = "",
) -> Response:
    """Register a host from the form; a refusal shows the form again with the reason."""
    try:
        host = host_service.add_host(
            session, name=name, uri=uri, test_driver_dir=settings.test_driver_dir
        )
    except VirtdeckError as exc:
        if exc.field is None:
            raise
        return form_refused(
            request, "partials/host_form.html", exc, form={"name": name, "uri": uri}
        )
    request.state.audit_target = audit_target("host", host.id, host.name)
    session.commit()
    sync.add(host.id)
    return redirect(request, f"/hosts/{host.id}")


@router.get("/hosts/{host_id:id}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def host_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    host_id: int,
    q: str = "",
    state: str = "",
    page: int = 1,
) -> HTMLResponse:
    """A host's facts and its guests, searchable by name and filterable by state."""
    host = host_service.get_host(session, host_id)
    page, offset = page_window(page)
    guests = guest_service.list_guests(
        session,
        host_id=host_id,
        state=state or None,
        q=q,
        limit=PAGE_SIZE,
        offset=offset,
    )
    context = {
        "host": host,
        "summary": host_service.summarize(session, [host])[0],
        "guests": guests,
        "q": q,
        "state": state,
        "page": page,
        "pages": page_count(guests.total),
        "states": guest_service.STATE_FILTERS,
        "sparks": usage_service.sparks(
            session, [g.id for g in guests.items], usage_interval=settings.usage_interval
        ),
    }
    if wants_fragment(request, "guest-table"):
        return templates.TemplateResponse(request, "partials/guest_table.html", context)
    if wants_fragment(request, "host-facts"):
        return templates.TemplateResponse(request, "partials/host_facts.html", context)
    return templates.TemplateResponse(request, "host.html", context)


@router.post(
    "/hosts/{host_id:id}/console-address",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "host.change"),
)
def set_console_address(
    request: Request,
    session: SessionDep,
    host_id: int,
    console_address: Annotated[str, Form()] = "",
) -> Response:
    """Save a qemu+tcp/tls host's console address; a refusal shows the form with the reason."""
    host = host_service.get_host(session, host_id)
    try:
        host_service.set_console_address(session, host_id, console_address)
    except VirtdeckError as exc:
        form = {"console_address": console_address}
        return form_refused(
            request, "partials/console_address_form.html", exc, form=form, host=host
        )
    request.state.audit_target = audit_target("host", host.id, host.name)
    session.commit()
    return with_toast(
        templates.TemplateResponse(
            request, "partials/console_address_form.html", {"host": host, "form": {}}
        ),
        f"{host.name}: console address {'saved' if host.console_address else 'cleared'}",
    )


@router.post("/hosts/{host_id:id}/delete", dependencies=guard(Permission.ADMIN, "host.remove"))
def remove_host(request: Request, session: SessionDep, sync: SyncDep, host_id: int) -> Response:
    """Forget a host (its guests keep running)."""
    host = host_service.remove_host(session, host_id)
    request.state.audit_target = audit_target("host", host.id, host.name)  # gone once written
    session.commit()
    sync.remove(host_id)
    return redirect(request, "/")
