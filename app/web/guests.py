"""The guest page."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import SessionDep, guard
from app.services import guests as guest_service
from app.services.auth import Permission
from app.services.inventory import last_seen
from app.web.templating import templates

router = APIRouter()


@router.get("/guests/{uuid}", response_class=HTMLResponse, dependencies=guard(Permission.VIEW))
def guest_page(request: Request, session: SessionDep, uuid: str) -> HTMLResponse:
    """A guest's state, resources, devices and domain XML."""
    guest = guest_service.get_guest(session, uuid)
    context = {
        "guest": guest,
        "host": guest.host,
        "status": guest_service.status(guest, guest.host),
        "last_seen": last_seen(guest, guest.host),
    }
    return templates.TemplateResponse(request, "guest.html", context)
