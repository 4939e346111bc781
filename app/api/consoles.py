"""/api/v1/guests/{uuid}/console/tickets and /screenshot: leave to open a console (the
WebSocket itself is /guests/{uuid}/console/{kind}/ws), and the guest's screen as PNG."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.deps import SessionDep, SyncDep, guard, needs
from app.services import consoles
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.screenshots import guest_screenshot

router = APIRouter(prefix="/guests", tags=["consoles"])


class TicketIn(BaseModel):
    """Which console to open."""

    kind: Literal["vnc", "serial"] = Field(description="vnc: the screen; serial: ttyS0")
    takeover: bool = Field(
        False, description="serial: take the console from whoever holds it (they are told)"
    )


class TicketOut(BaseModel):
    """A single-use ticket, valid for 30 seconds, for the user who asked."""

    ticket: str
    kind: str
    guest_uuid: str
    expires_at: datetime
    url: str = Field(description="the WebSocket path to open with this ticket")


@router.post(
    "/{uuid:guest}/console/tickets",
    response_model=TicketOut,
    status_code=201,
    responses={409: {"description": "not running, or the serial console is in use"}},
)
def console_ticket(
    request: Request,
    uuid: str,
    body: TicketIn,
    session: SessionDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "console.ticket")],
) -> TicketOut:
    """A ticket to open the guest's console over the WebSocket in `url`, with the same login
    (this site's Origin and session cookie, or the same API token)."""
    guest = guest_service.get_guest(session, uuid)
    ticket = consoles.issue_ticket(
        session, principal=principal, guest=guest, kind=body.kind, takeover=body.takeover
    )
    session.commit()
    request.state.action = f"console.ticket.{body.kind}"
    return TicketOut(**ticket.__dict__)


@router.get(
    "/{uuid:guest}/screenshot",
    response_class=Response,
    dependencies=guard(Permission.VIEW),
    responses={
        200: {"content": {"image/png": {}}, "description": "the screen now"},
        409: {"description": "the guest is not running or has no screen"},
    },
)
def guest_screenshot_png(uuid: str, session: SessionDep, sync: SyncDep) -> Response:
    """The running guest's screen now, as PNG (at most 2 s old)."""
    guest = guest_service.get_guest(session, uuid)
    png = guest_screenshot(sync, guest)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
