"""/api/v1/guests"""

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.schemas import GuestDetail, GuestList, GuestOut
from app.deps import SessionDep, guard
from app.services import guests as guest_service
from app.services.auth import Permission
from app.services.paging import MAX_OFFSET

router = APIRouter(prefix="/guests", tags=["guests"])


@router.get("", response_model=GuestList, dependencies=guard(Permission.VIEW))
def list_guests(
    session: SessionDep,
    host_id: int | None = None,
    state: Annotated[str | None, Query(description="a libvirt state, or 'gone'")] = None,
    q: Annotated[str | None, Query(max_length=255, description="part of the name")] = None,
    limit: Annotated[int, Query(ge=1, le=guest_service.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> GuestList:
    """Guests by name, filtered and paginated; gone guests only with state=gone."""
    page = guest_service.list_guests(
        session, host_id=host_id, state=state, q=q, limit=limit, offset=offset
    )
    return GuestList(
        items=[GuestOut.of(g) for g in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{uuid}", response_model=GuestDetail, dependencies=guard(Permission.VIEW))
def get_guest(uuid: str, session: SessionDep) -> GuestDetail:
    """One guest, with its domain XML."""
    guest = guest_service.get_guest(session, uuid)
    return GuestDetail(**GuestOut.of(guest).model_dump(), domain_xml=guest.domain_xml)
