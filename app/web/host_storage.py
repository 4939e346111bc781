"""The host page's storage pools, their volumes and the virtual networks, read live from the host
when the section opens; admins start and stop pools and networks and make directory pools here
(app.services.storage_admin)."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, SyncDep, guard
from app.errors import Invalid, VirtdeckError
from app.services import audit, host_storage, storage_admin
from app.services import hosts as host_service
from app.services.auth import Permission
from app.web.htmx import with_toast
from app.web.templating import templates

router = APIRouter()
PANEL = "partials/host_storage.html"


def _panel(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    host_id: int,
    *,
    form: dict | None = None,
    refusal: VirtdeckError | None = None,
) -> HTMLResponse:
    """The section as the host shows it now (or why it cannot be read), with the pool form's
    typed values and errors, or an action's refusal, if any (audited as the request's error)."""
    host = host_service.get_host(session, host_id)
    context = {"host": host, "pools": [], "networks": [], "unavailable": None,
               "form": form or {}, "refusal": refusal and refusal.message}  # fmt: skip
    try:
        context["pools"] = host_storage.pools(session, sync, host_id)
        context["networks"] = host_storage.networks(session, sync, host_id)
    except VirtdeckError as exc:
        context["unavailable"] = exc.message
    if refusal is not None:
        request.state.audit_error = refusal.message
    return templates.TemplateResponse(request, PANEL, context)


@router.get(
    "/hosts/{host_id:id}/storage", response_class=HTMLResponse, dependencies=guard(Permission.VIEW)
)
def storage_section(
    request: Request, session: SessionDep, sync: SyncDep, host_id: int
) -> HTMLResponse:
    """The host's pools and networks."""
    return _panel(request, session, sync, host_id)


@router.get(
    "/hosts/{host_id:id}/pools/{pool:label}/volumes",
    response_class=HTMLResponse,
    dependencies=guard(Permission.VIEW),
)
def pool_volumes(
    request: Request, session: SessionDep, sync: SyncDep, host_id: int, pool: str
) -> HTMLResponse:
    """The volumes of one pool, with the guests whose disks they are."""
    context: dict = {"pool": pool, "volumes": [], "users": {}, "unavailable": None}
    try:
        context["volumes"] = host_storage.volumes(session, sync, host_id=host_id, pool=pool)
    except VirtdeckError as exc:
        context["unavailable"] = exc.message
    context["users"] = host_storage.volume_users(session, host_id, context["volumes"])
    return templates.TemplateResponse(request, "partials/pool_volumes.html", context)


@router.post(
    "/hosts/{host_id:id}/pools",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN, "pool.create"),
)
def create_pool(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    host_id: int,
    name: Annotated[str, Form()] = "",
    path: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Make a directory pool; a refusal shows the form again with the reason by each field."""
    request.state.audit_target = audit.within(session, host_id, "pool", name[:64])
    try:
        pool = storage_admin.create_directory_pool(
            session, sync, host_id=host_id, name=name, path=path
        )
    except VirtdeckError as exc:
        errors = exc.extra.get("errors") or {exc.field or "pool": exc.message}
        form = {"name": name, "path": path, "errors": errors}
        return _panel(request, session, sync, host_id, form=form, refusal=exc)
    response = _panel(request, session, sync, host_id)
    return with_toast(response, f"Storage pool {pool.name} created and started")


def _switch(
    request: Request,
    session: SessionDep,
    sync: SyncDep,
    host_id: int,
    *,
    noun: str,
    name: str,
    switch: str,
) -> HTMLResponse:
    """Start or stop a pool or network (noun); a refusal is shown above the tables."""
    if switch not in ("start", "stop"):
        raise Invalid(f"action: {noun}s are started or stopped, not '{switch}'", field="action")
    request.state.action = f"{noun}.{switch}"
    request.state.audit_target = audit.within(session, host_id, noun, name)
    change = storage_admin.set_pool_active if noun == "pool" else storage_admin.set_network_active
    try:
        change(session, sync, host_id=host_id, active=switch == "start", **{noun: name})
    except VirtdeckError as exc:
        return _panel(request, session, sync, host_id, refusal=exc)
    done = "started" if switch == "start" else "stopped"
    label = "Storage pool" if noun == "pool" else "Network"
    return with_toast(_panel(request, session, sync, host_id), f"{label} {name} {done}")


@router.post(
    "/hosts/{host_id:id}/pools/{pool:label}/{switch:word}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN),
)
def switch_pool(
    request: Request, session: SessionDep, sync: SyncDep, host_id: int, pool: str, switch: str
) -> HTMLResponse:
    """Start or stop a storage pool."""
    return _switch(request, session, sync, host_id, noun="pool", name=pool, switch=switch)


@router.post(
    "/hosts/{host_id:id}/networks/{network:label}/{switch:word}",
    response_class=HTMLResponse,
    dependencies=guard(Permission.ADMIN),
)
def switch_network(
    request: Request, session: SessionDep, sync: SyncDep, host_id: int, network: str, switch: str
) -> HTMLResponse:
    """Start or stop a virtual network (refused while running guests use it)."""
    return _switch(request, session, sync, host_id, noun="network", name=network, switch=switch)
