"""POST /api/v1/hosts/{id}/pools and .../pools/{pool}/start|stop, .../networks/{net}/start|stop:
an admin makes a directory pool, or starts and stops a pool or virtual network."""

from typing import Annotated, Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field

from app.deps import SessionDep, SyncDep, guard
from app.services import audit, host_storage, storage_admin
from app.services.auth import Permission

router = APIRouter(tags=["storage"])
Switch = Literal["start", "stop"]


class DirectoryPoolIn(BaseModel):
    """A directory pool to make: its name and the directory on the host."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(max_length=64)]
    path: Annotated[str, Field(max_length=storage_admin.PATH_MAX)]


@router.post(
    "/hosts/{host_id:id}/pools",
    response_model=host_storage.Pool,
    status_code=status.HTTP_201_CREATED,
    dependencies=guard(Permission.ADMIN, "pool.create"),
)
def create_pool(
    request: Request, host_id: int, body: DirectoryPoolIn, session: SessionDep, sync: SyncDep
) -> host_storage.Pool:
    """Make a directory pool (the directory too if missing), started and set to autostart."""
    request.state.audit_target = audit.within(session, host_id, "pool", body.name)
    return storage_admin.create_directory_pool(
        session, sync, host_id=host_id, name=body.name, path=body.path
    )


@router.post(
    "/hosts/{host_id:id}/pools/{pool:label}/{switch:word}",
    response_model=host_storage.Pool,
    dependencies=guard(Permission.ADMIN),
)
def switch_pool(
    request: Request, host_id: int, pool: str, switch: Switch, session: SessionDep, sync: SyncDep
) -> host_storage.Pool:
    """Start or stop the pool; the pool as it is then."""
    request.state.action = f"pool.{switch}"
    request.state.audit_target = audit.within(session, host_id, "pool", pool)
    return storage_admin.set_pool_active(
        session, sync, host_id=host_id, pool=pool, active=switch == "start"
    )


@router.post(
    "/hosts/{host_id:id}/networks/{network:label}/{switch:word}",
    response_model=host_storage.Network,
    dependencies=guard(Permission.ADMIN),
)
def switch_network(
    request: Request,
    host_id: int,
    network: str,
    switch: Switch,
    session: SessionDep,
    sync: SyncDep,
) -> host_storage.Network:
    """Start or stop the virtual network (409 to stop one running guests use, naming them)."""
    request.state.action = f"network.{switch}"
    request.state.audit_target = audit.within(session, host_id, "network", network)
    return storage_admin.set_network_active(
        session, sync, host_id=host_id, network=network, active=switch == "start"
    )
