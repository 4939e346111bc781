"""/api/v1/hosts"""

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy.orm import Session

from app.api.schemas import HostCreate, HostOut, HostUpdate, RefreshOut
from app.deps import SessionDep, SettingsDep, SyncDep, guard
from app.models import Host
from app.models.audit import audit_target
from app.services import hosts as host_service
from app.services import overcommit as overcommit_service
from app.services.auth import Permission

router = APIRouter(prefix="/hosts", tags=["hosts"])


def _out(session: Session, hosts: list[Host]) -> list[HostOut]:
    """The hosts with their guest totals and running overcommit ratios."""
    summaries = host_service.summarize(session, hosts)
    pictures = overcommit_service.pictures(session, hosts)
    return [HostOut.of(s, p) for s, p in zip(summaries, pictures, strict=True)]


@router.get("", response_model=list[HostOut], dependencies=guard(Permission.VIEW))
def list_hosts(session: SessionDep) -> list[HostOut]:
    """Every registered host with its state, facts and guest totals."""
    return _out(session, host_service.list_hosts(session))


@router.post(
    "",
    response_model=HostOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=guard(Permission.ADMIN, "host.add"),
)
def add_host(
    request: Request,
    body: HostCreate,
    session: SessionDep,
    sync: SyncDep,
    settings: SettingsDep,
) -> HostOut:
    """Register a host; its worker connects and syncs in the background."""
    host = host_service.add_host(
        session,
        name=body.name,
        uri=body.uri,
        test_driver_dir=settings.test_driver_dir,
        console_address=body.console_address,
    )
    request.state.audit_target = audit_target("host", host.id, host.name)
    session.commit()
    sync.add(host.id)
    return _out(session, [host])[0]


@router.patch(
    "/{host_id:id}", response_model=HostOut, dependencies=guard(Permission.ADMIN, "host.change")
)
def change_host(request: Request, host_id: int, body: HostUpdate, session: SessionDep) -> HostOut:
    """Change a host's console address."""
    host = host_service.set_console_address(session, host_id, body.console_address)
    request.state.audit_target = audit_target("host", host.id, host.name)
    session.commit()
    return _out(session, [host])[0]


@router.get("/{host_id:id}", response_model=HostOut, dependencies=guard(Permission.VIEW))
def get_host(host_id: int, session: SessionDep) -> HostOut:
    """One host."""
    return _out(session, [host_service.get_host(session, host_id)])[0]


@router.delete(
    "/{host_id:id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=guard(Permission.ADMIN, "host.remove"),
)
def remove_host(request: Request, host_id: int, session: SessionDep, sync: SyncDep) -> Response:
    """Forget a host and its inventory; nothing on the host changes."""
    host = host_service.remove_host(session, host_id)
    request.state.audit_target = audit_target("host", host.id, host.name)  # gone once written
    session.commit()
    sync.remove(host_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{host_id:id}/refresh",
    response_model=RefreshOut,
    responses={202: {"model": RefreshOut, "description": "sync requested, not finished yet"}},
    dependencies=guard(Permission.OPERATE, "host.refresh"),
)
def refresh_host(
    host_id: int,
    session: SessionDep,
    sync: SyncDep,
    response: Response,
    wait: float = Query(0, ge=0, le=30, description="seconds to wait for the sync to finish"),
) -> RefreshOut:
    """Sync a host now: 200 when it finished within `wait`, else 202."""
    host_service.get_host(session, host_id)
    synced = sync.refresh(host_id, wait=wait)
    if not synced:
        response.status_code = status.HTTP_202_ACCEPTED
    return RefreshOut(host_id=host_id, synced=synced)
