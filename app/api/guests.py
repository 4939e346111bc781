"""/api/v1/guests"""

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.api.schemas import GuestDetail, GuestList, GuestOut, guest_fields
from app.deps import RowId, SessionDep, SessionsDep, SyncDep, guard, needs
from app.services import guests as guest_service
from app.services.auth import Permission, Principal
from app.services.guest_actions import ACTIONS, run_action
from app.services.paging import MAX_OFFSET

router = APIRouter(prefix="/guests", tags=["guests"])


@router.get("", response_model=GuestList, dependencies=guard(Permission.VIEW))
def list_guests(
    session: SessionDep,
    host_id: RowId | None = None,
    state: Annotated[str | None, Query(description="a libvirt state, or 'gone'")] = None,
    q: Annotated[str | None, Query(max_length=255, description="part of the name")] = None,
    tag: Annotated[str | None, Query(max_length=64, description="a tag the guest has")] = None,
    limit: Annotated[int, Query(ge=1, le=guest_service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    sort: Annotated[
        str,
        Query(
            max_length=16,
            description=f"one of {', '.join(guest_service.SORTS)}; with - first, descending",
        ),
    ] = "name",
) -> dict[str, Any]:
    """Guests in the order sort asks for (by name by default, then by name), filtered and
    paginated; gone guests only with state=gone."""
    page = guest_service.list_guests(
        session, host_id=host_id, state=state, q=q, tag=tag, limit=limit, offset=offset,
        sort=sort,
    )  # fmt: skip
    return {
        "items": [guest_fields(g, page.hosts[g.host_id]) for g in page.items],
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }


GuestAction = StrEnum("GuestAction", {a: a for a in ACTIONS})


@router.post(
    "/{uuid:guest}/actions/{action:word}",
    response_model=GuestOut,
    responses={
        403: {"description": "force asked by someone who is not an admin"},
        409: {"description": "the state does not allow it, it is busy, or over the policy"},
    },
)
def guest_action(
    request: Request,
    uuid: str,
    action: GuestAction,
    sessions: SessionsDep,
    sync: SyncDep,
    principal: Annotated[Principal, needs(Permission.OPERATE, "guest.action")],
    force: Annotated[
        bool, Query(description="start even over the overcommit policy (admins only)")
    ] = False,
) -> GuestOut:
    """Start, shut down, force off, reboot, suspend or resume a guest, or set its autostart."""
    request.state.action = f"guest.{action.value}"
    return GuestOut.of(
        run_action(sessions, sync, uuid=uuid, action=action.value, principal=principal, force=force)
    )


@router.get("/{uuid:guest}", response_model=GuestDetail, dependencies=guard(Permission.VIEW))
def get_guest(uuid: str, session: SessionDep) -> GuestDetail:
    """One guest, with its domain XML."""
    guest = guest_service.get_guest(session, uuid)
    return GuestDetail.of(guest)
