"""The guest page's Clone section: a new name and a pool chosen from the host's, submitted to
the same service as POST /api/v1/guests/{uuid}/clone; the job's page then follows the copy."""

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import JobsDep, SessionDep, SessionsDep, SettingsDep, SyncDep, guard, needs
from app.errors import VirtdeckError
from app.models import Guest
from app.models.audit import audit_target
from app.services import guests as guest_service
from app.services import host_storage
from app.services.auth import Permission, Principal
from app.services.guest_clone import start_clone
from app.services.ports import HostCalls
from app.web.htmx import redirect
from app.web.templating import form_refused, templates

router = APIRouter()
TEMPLATE = "partials/guest_clone.html"


def _pools(session: Session, sync: HostCalls, guest: Guest) -> dict:
    """The pools a clone can go to (active directory pools), or why they cannot be read."""
    pools, unavailable = host_storage.file_pools(session, sync, guest.host_id)
    return {"pools": pools, "unavailable": unavailable}


@router.get(
    "/guests/{uuid:guest}/clone",
    response_class=HTMLResponse,
    dependencies=guard(Permission.OPERATE),
)
def clone_section(request: Request, session: SessionDep, sync: SyncDep, uuid: str) -> Response:
    """The Clone section, with the host's pools as they are now."""
    guest = guest_service.get_guest(session, uuid)
    context = {"guest": guest, "form": {"name": f"{guest.name}-clone"}}
    return templates.TemplateResponse(
        request, TEMPLATE, {**context, **_pools(session, sync, guest)}
    )


@router.post("/guests/{uuid:guest}/clone", response_class=HTMLResponse)
def clone(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    sync: SyncDep,
    jobs: JobsDep,
    settings: SettingsDep,
    uuid: str,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.clone")],
    name: Annotated[str, Form(max_length=64)] = "",
    pool: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    """Start the clone and go to its job's page; a refusal shows next to its field."""
    guest = guest_service.get_guest(session, uuid)
    request.state.audit_target = audit_target("guest", uuid, guest.name)
    try:
        job = start_clone(
            sessions, sync, jobs, settings, uuid=uuid, name=name.strip(), pool=pool,
            principal=principal,
        )  # fmt: skip
    except VirtdeckError as exc:
        if exc.field is None or exc.status_code >= 500:
            raise
        context = {"guest": guest, **_pools(session, sync, guest)}
        return form_refused(request, TEMPLATE, exc, form={"name": name, "pool": pool}, **context)
    return redirect(request, f"/jobs/{job.id}")
